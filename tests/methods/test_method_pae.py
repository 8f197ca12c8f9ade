"""PAE: each task keeps the scheduled share of what it trained and owns it for good; the network expands
exactly when a layer's free share falls below the threshold; old tasks' outputs are bit-identical after later
tasks, expansions included."""

import math

import pytest
import torch

from growsearch.graph.module_graph import FREE
from growsearch.methods.algorithms import growing_stack
from growsearch.methods.base import TaskContext
from growsearch.store.run_folder import RunFolder

from tiny_runs import assert_old_tasks_unchanged, tiny_space

CONV = {"layers": [{"conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2}}, {"linear": 16}]}
# half of what a task trains is pruned: the free share halves per task (0.5, 0.25, 0.125) and falls below
# 0.2 before task 3, which expands the network (x1.5 parameters, widths 16 -> 20)
TINY = {
    "train_epochs": 3,
    "sparsities": [0.5],
    "prune_epochs": 2,
    "ramp_epochs": 1,
    "prune_every": 1,
    "expand_below": 0.2,
    "growth_step": 0.5,
    "max_size_multiplier": 2.0,
}
TRAINING = {"lr": 0.01, "epochs": 2}


@pytest.fixture(scope="module")
def pae_run(tmp_path_factory):
    from growsearch.runner import start_run

    from tiny_runs import tiny_options

    space = tiny_space("pae", options=TINY, training=TRAINING)
    return start_run(space, tiny_options(), tmp_path_factory.mktemp("pae") / "run")


@pytest.mark.parametrize("network", [None, CONV], ids=["mlp", "conv"])
def test_old_tasks_outputs_are_bit_identical_after_later_tasks(network, pae_run, run_tiny, digits_stream):
    result = pae_run if network is None else run_tiny("pae", network=network, options=TINY, training=TRAINING)
    assert_old_tasks_unchanged(result.path, digits_stream)
    assert result.metrics["metrics"]["forgetting"] == 0.0
    assert sum(r.mechanism["expansions"] for r in result.records) >= 1  # expanded on the way


def test_the_network_expands_when_and_only_when_free_capacity_runs_out(pae_run):
    expansions = [r.mechanism["expansions"] for r in pae_run.records]
    assert expansions[:3] == [0, 0, 0] and expansions[3] == 1
    for record in pae_run.records:
        mechanism = record.mechanism
        assert (mechanism["expansions"] > 0) == (mechanism["free_before"] < 0.2)
        assert mechanism["free_after_expansion"] >= 0.2 or mechanism["size_multiplier"] == 2.0
    final, _ = RunFolder.open(pae_run.path).load_task(4)
    multiplier = pae_run.records[4].mechanism["size_multiplier"]
    expected = growing_stack.width_at(16, multiplier)
    assert growing_stack.widths(final, "shared", 2) == [expected, expected]


@pytest.mark.parametrize("threshold, expands", [(0.1, False), (0.2, True)], ids=["room-left", "ran-out"])
def test_expansion_follows_the_threshold_on_the_same_network(pae_run, digits_stream, threshold, expands):
    """After task 2 an eighth of each layer is free: enough at threshold 0.1, too little at 0.2."""
    from growsearch.methods.pae import PAE

    method = PAE(tiny_space("pae", options={**TINY, "expand_below": threshold}, training=TRAINING))
    committed, _ = RunFolder.open(pae_run.path).load_task(2)
    specs = method.specs_for(digits_stream.input_shape)
    ctx = TaskContext(3, digits_stream.tasks[3], committed, specs, (), 0, 5)
    assert method.runs_out(committed, ctx) == expands
    torch.manual_seed(0)
    candidate = method.build({}, ctx)
    assert candidate.mechanism["free_before"] == pytest.approx(0.125)
    assert candidate.mechanism["expansions"] == int(expands)
    assert growing_stack.widths(candidate.graph, "shared", 2) == ([20, 20] if expands else [16, 16])


def test_each_task_owns_the_scheduled_share_of_what_it_trained(pae_run):
    run = RunFolder.open(pae_run.path)
    before = None
    for t in range(5):
        after, _ = run.load_task(t)
        owned_total = entries = 0
        for node_id in growing_stack.all_groups(after, "shared", 2):
            node = after.node(node_id)
            for name, owners in node.owners.items():
                known = before is not None and node_id in before
                had = before.node(node_id).owners[name] == FREE if known else torch.ones_like(owners).bool()
                trained, owned = int(had.sum()), int((owners == t).sum())
                owned_total, entries = owned_total + owned, entries + owners.numel()
                if owners.dim() >= 2:
                    assert owned == trained - round(0.5 * trained), (t, node_id, name)
                    assert (node.weights[name][owners == FREE] == 0).all()
                else:  # biases: the first task's, and a new group's for the task that expands
                    assert owned == trained
        assert pae_run.records[t].mechanism["capacity_used"] == pytest.approx(owned_total / entries)
        before = after


def test_a_search_over_the_sparsity_against_capacity(run_tiny):
    result = run_tiny(
        "pae",
        options={**TINY, "search": True, "sparsity_range": [0.3, 0.9]},
        search={"n_trials": 2, "objectives": ["accuracy", "capacity_used"], "sampler": "nsga2"},
        training=TRAINING,
    )
    for record in result.records:
        sparsity = record.decisions["sparsity"]
        assert 0.3 <= sparsity <= 0.9 and record.mechanism["sparsity"] == sparsity
    assert math.isfinite(result.metrics["metrics"]["average_accuracy"])
