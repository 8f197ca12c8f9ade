"""CLNP: old tasks' outputs are unchanged after later tasks; the units a task keeps are held and the free
ones are what later tasks train, so capacity shrinks task by task; interference weights are exactly
zero; the threshold is the largest within the tolerance; a conv backbone and the search work."""

import math

import pytest
import torch

from growsearch.graph.compile import compile_for_training, compile_view
from growsearch.grow.gates import input_units, used_before
from growsearch.methods._clnp_units import choose_threshold, kept_units
from growsearch.store.run_folder import RunFolder
from growsearch.train.candidate import evaluate

from tiny_runs import assert_old_tasks_unchanged

CONV = {"layers": [{"conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2}}, {"linear": 16}]}
LAYERS = ("shared/L0", "shared/L1")


@pytest.fixture(scope="module")
def clnp_run(tmp_path_factory):
    from growsearch.runner import start_run

    from tiny_runs import tiny_options, tiny_space

    space = tiny_space("clnp", training={"epochs": 6, "batch_size": 16})
    return start_run(space, tiny_options(), tmp_path_factory.mktemp("clnp") / "run")


def test_old_tasks_outputs_are_bit_identical_after_later_tasks(clnp_run, digits_stream):
    assert_old_tasks_unchanged(clnp_run.path, digits_stream)
    assert clnp_run.metrics["metrics"]["forgetting"] == 0.0
    final, _ = RunFolder.open(clnp_run.path).load_task(4)
    for node_id in LAYERS:
        gates = final.node(node_id).gates
        assert sorted(gates) == [0, 1, 2, 3, 4]
        assert all(set(g.unique().tolist()) <= {0.0, 1.0} for g in gates.values())
        for t in range(4):  # a task's active units include every earlier task's
            assert bool((gates[t + 1] >= gates[t]).all()), (node_id, t)


def test_capacity_shrinks_task_by_task_and_the_record_counts_it(clnp_run):
    final, _ = RunFolder.open(clnp_run.path).load_task(4)
    free_before = {i: 16 for i in range(len(LAYERS))}
    claimed_after_first = 0
    for task, record in enumerate(clnp_run.records):
        capacity = record.mechanism["capacity"]
        newly = 0
        for layer in capacity:
            i, node_id = layer["layer"], LAYERS[layer["layer"]]
            gate = final.node(node_id).gates[task] > 0.5
            assert layer["active"] == int(gate.sum())
            assert layer["free_before"] == free_before[i]
            assert layer["free"] == free_before[i] - layer["newly_claimed"] == int((~gate).sum())
            free_before[i] = layer["free"]
            newly += layer["newly_claimed"]
        assert record.mechanism["capacity_used"] == newly / (16 * len(LAYERS))
        claimed_after_first += newly if task else 0
    assert all(0 < free < 16 for free in free_before.values())  # pruning left units free, tasks took some
    assert claimed_after_first > 0  # later tasks claimed units the first left free


def test_kept_units_are_held_and_later_tasks_train_the_free_ones(clnp_run):
    run = RunFolder.open(clnp_run.path)
    after_0, _ = run.load_task(0)
    final, _ = run.load_task(4)
    for node_id in LAYERS:
        kept = used_before(after_0, node_id, 1)
        claimed_later = used_before(final, node_id, 5) & ~kept
        assert kept.any() and claimed_later.any(), node_id
        for name, w0 in after_0.node(node_id).weights.items():
            w4 = final.node(node_id).weights[name]
            assert torch.equal(w4[kept], w0[kept]), (node_id, name)  # rows: incoming weights and biases
            assert not torch.equal(w4[claimed_later], w0[claimed_later]), (node_id, name)


def test_interference_weights_are_exactly_zero(clnp_run, digits_stream):
    final, _ = RunFolder.open(clnp_run.path).load_task(4)
    severed = 0
    for t in range(5):
        active = {n: used_before(final, n, t + 1) for n in LAYERS}
        into, out_of = active["shared/L1"], ~active["shared/L0"]
        weight = final.node("shared/L1").weights["0.weight"]
        assert torch.equal(weight[into][:, out_of], torch.zeros_like(weight[into][:, out_of])), t
        head = final.node(final.head(t)).weights["weight"]
        assert (head[:, input_units(final, final.head(t), ~active["shared/L1"])] == 0).all(), t
        severed += int(into.sum()) * int(out_of.sum())
        assert clnp_run.records[t].mechanism["interference_weights_zeroed"] >= 0
    assert severed > 0  # the check above was not vacuous
    # so a task's outputs do not even need its gates: later tasks' units reach it through zeros only
    for t in range(4):
        x = digits_stream.tasks[t].test.x
        gated = compile_view(final, t).module(x)
        for node_id in LAYERS:
            del final.node(node_id).gates[t]
        ungated = compile_view(final, t).module(x)
        assert torch.equal(ungated, gated), t


def test_the_threshold_is_the_largest_within_the_tolerance():
    activations = torch.tensor([0.9, 0.0, 0.5, 0.1, 0.2])
    by_pruned = {0: 0.90, 1: 0.90, 2: 0.89, 3: 0.86, 4: 0.885, 5: 0.50}  # accuracy by units pruned
    asked = []

    def accuracy_at(threshold):
        asked.append(threshold)
        return by_pruned[int((activations < threshold).sum())]

    choice = choose_threshold(activations, accuracy_at, tolerance=0.02)
    assert choice.threshold == pytest.approx(0.9)  # prunes 4 units although pruning 3 costs too much
    assert (choice.accuracy, choice.unpruned_accuracy) == (0.885, 0.90)
    assert kept_units(torch.zeros(5, dtype=torch.bool), activations, choice.threshold).tolist() == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert choose_threshold(activations, accuracy_at, tolerance=0.0).threshold == pytest.approx(0.1)
    everything = choose_threshold(activations, lambda threshold: 0.9, tolerance=0.0)
    assert everything.threshold > 0.9  # nothing lost by pruning every free unit: all pruned
    assert not kept_units(torch.zeros(5, dtype=torch.bool), activations, everything.threshold).any()
    nothing = choose_threshold(activations, lambda threshold: 1.0 if threshold <= 0 else 0.5, 0.1)
    assert nothing.threshold == 0.0 and nothing.accuracy == 1.0  # every pruning costs too much
    assert asked[:2] == [0.0, pytest.approx(0.9 + 1e-7, abs=1e-6)]  # unpruned, then all pruned first


@pytest.mark.parametrize("tolerance", [None, 1.0], ids=["shipped", "anything-goes"])
def test_the_search_is_told_the_pruned_networks_accuracy(tolerance, clnp_run, run_tiny, digits_stream):
    if tolerance is None:
        result, tolerance = clnp_run, 0.01
    else:  # every loss is within tolerance: the largest threshold prunes every unit, for every task
        result = run_tiny("clnp", options={"tolerance": tolerance}, training={"epochs": 3})
    run = RunFolder.open(result.path)
    for t, record in enumerate(result.records):
        mechanism = record.mechanism
        committed, _ = run.load_task(t)
        pruned = evaluate(committed, t, digits_stream.tasks[t].val)
        assert record.val_accuracy == mechanism["val_accuracy_pruned"] == pruned
        assert pruned >= mechanism["val_accuracy_unpruned"] - tolerance - 1e-9
        if tolerance == 1.0:
            assert all(layer["active"] == 0 for layer in mechanism["capacity"])
    if tolerance == 1.0:
        assert result.records[0].mechanism["val_accuracy_unpruned"] > result.records[0].val_accuracy


def test_a_conv_backbone_end_to_end(run_tiny, digits_stream):
    result = run_tiny("clnp", network=CONV, training={"epochs": 5, "batch_size": 16})
    assert_old_tasks_unchanged(result.path, digits_stream)
    assert result.metrics["metrics"]["forgetting"] == 0.0
    assert result.metrics["metrics"]["average_accuracy"] > 0.8
    channels = [r.mechanism["capacity"][0] for r in result.records]
    assert channels[0]["units"] == 4 and channels[-1]["free"] <= channels[0]["free"]
    final, _ = RunFolder.open(result.path).load_task(4)
    assert sorted(final.node("shared/L0").gates) == [0, 1, 2, 3, 4]


def test_a_search_over_tolerance_and_l1_against_capacity(run_tiny):
    result = run_tiny(
        "clnp",
        options={"search": True, "sparsity": "activations"},
        search={"n_trials": 3, "objectives": ["accuracy", "capacity_used"], "sampler": "nsga2"},
        training={"epochs": 2},
    )
    for record in result.records:
        decisions = record.decisions
        assert 0 <= decisions["tolerance"] <= 0.1 and 1e-5 <= decisions["l1"] <= 1e-2
        assert record.pareto_front
    assert math.isfinite(result.metrics["metrics"]["average_accuracy"])


@pytest.mark.parametrize("sparsity", ["weights", "activations"])
def test_the_l1_penalty_is_on_what_the_task_trains(sparsity, clnp_run, digits_stream):
    from growsearch.methods.base import TaskContext
    from growsearch.methods.clnp import CLNP
    from growsearch.train.batches import Minibatches
    from growsearch.train.extension import TrainingRun

    from tiny_runs import tiny_space

    method = CLNP(tiny_space("clnp", options={"sparsity": sparsity, "l1": 0.5}))
    committed, _ = RunFolder.open(clnp_run.path).load_task(0)
    specs = method.specs_for(digits_stream.input_shape)
    ctx = TaskContext(1, digits_stream.tasks[1], committed, specs, (), 0, 5)
    candidate = method.build({}, ctx)
    training = candidate.training
    program = compile_for_training(candidate.graph, 1, train_masks=training.train_masks, gates=training.gates)
    x = digits_stream.tasks[1].train.x
    batches = Minibatches([x], digits_stream.tasks[1].train.y, 16, seed=0)
    training.start(TrainingRun(program, batches, epochs=1))
    program.suffix(x)
    free = {n: ~used_before(committed, n, 1) for n in LAYERS}
    assert all(f.any() and not f.all() for f in free.values())
    if sparsity == "weights":  # the free units' incoming weights, and the new head's
        expected = sum(_weight(program, n)[free[n]].abs().sum() for n in LAYERS)
        expected = expected + _weight(program, "t1/head").abs().sum()
    else:  # the free units' mean activations
        expected = sum(training.gates[n].last.mean(0)[free[n]].sum() for n in LAYERS)
    torch.testing.assert_close(training.penalty(), 0.5 * expected)


def _weight(program, node_id):
    return next(p for p in program.full.node_modules[node_id].parameters() if p.dim() == 2)
