"""CLEAS end to end on split digits: reused neurons are frozen and unchanged, dropped ones are invisible to
the new task, and old tasks' outputs are bit-identical after every later task."""

from __future__ import annotations

import optuna
import pytest
import torch

from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow import neurons
from growsearch.runner import start_run
from growsearch.store.run_folder import RunFolder

from tiny_runs import tiny_options, tiny_space


@pytest.fixture(scope="module")
def cleas_run(tmp_path_factory):
    space = tiny_space("cleas", search={"n_trials": 3, "storage": "journal"}, training={"epochs": 1})
    return start_run(space, tiny_options(), tmp_path_factory.mktemp("cleas") / "run")


def logits(graph: ModuleGraph, task: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return compile_view(graph, task).module.eval()(x)


def test_reused_neurons_are_frozen_and_old_tasks_outputs_stay_bit_identical(cleas_run, digits_stream):
    run = RunFolder.open(cleas_run.path)
    final, _ = run.load_task(4)
    for task in range(4):
        committed, _ = run.load_task(task)
        for node_id, node in committed.nodes():
            assert final.node(node_id).frozen or node_id == "input"
            for name, value in node.weights.items():
                assert torch.equal(value, final.node(node_id).weights[name]), (node_id, name)
        x = digits_stream.tasks[task].test.x
        assert torch.equal(logits(committed, task, x), logits(final, task, x))
    column = [row[0] for row in cleas_run.metrics["accuracy"]]
    assert column == [column[0]] * 5


def test_the_new_task_reads_the_reused_neurons_and_has_zero_weights_from_dropped_ones(cleas_run):
    run = RunFolder.open(cleas_run.path)
    for record in cleas_run.records[1:]:
        task, decisions = record.task, record.decisions
        graph, _ = run.load_task(task)
        reuse = decisions["reuse"]
        assert [m.count("1") for m in (reuse["L0"], reuse["L1"])] == decisions["reused_units"]
        old = neurons.layer_groups(graph, 1, task)  # the head reads layer 1: reused old groups, then new
        sizes = [graph.node(n).spec.out_features for n in old]
        masks = torch.tensor([c == "1" for c in reuse["L1"]]).split(sizes)
        kept = [(group, mask) for group, mask in zip(old, masks, strict=True) if mask.any()]
        head = graph.node(f"t{task}/head")
        assert list(head.inputs[: len(kept)]) == [group for group, _ in kept]
        columns = torch.cat([mask for _, mask in kept])
        weight = next(w for w in head.weights.values() if w.dim() == 2)[:, : columns.numel()]
        assert torch.equal(weight[:, ~columns], torch.zeros_like(weight[:, ~columns]))
        assert bool((weight[:, columns] != 0).all())
        assert head.frozen and all(bool((owners == task).all()) for owners in head.owners.values())


def test_every_later_task_searched_its_budget_of_architectures(cleas_run):
    storage = RunFolder.open(cleas_run.path).storage("journal")
    for record in cleas_run.records[1:]:
        study = optuna.load_study(study_name=f"task-{record.task}", storage=storage)
        trials = study.get_trials()
        assert len(trials) == 3 and all("reuse_L0_0" in t.params for t in trials)
        assert all(0 <= t.params["add_units_L1"] <= 30 for t in trials)

        def reward(t):  # accuracy - alpha x new neurons: the paper keeps the best reward
            return t.value - 1e-4 * (t.params["add_units_L0"] + t.params["add_units_L1"])

        best = max((t for t in trials if t.value is not None), key=lambda t: (reward(t), -t.number))
        assert record.chosen_trial == best.number
        assert record.decisions["add_units"] == [best.params["add_units_L0"], best.params["add_units_L1"]]
