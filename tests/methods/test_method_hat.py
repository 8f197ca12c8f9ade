"""HAT: old tasks' outputs are unchanged after later tasks; a weight between two units an earlier task
uses gets no update; s is annealed within each epoch and the embedding's gradient compensated as the
paper and the authors' code say; the record shows the capacity each task uses."""

import math

import pytest
import torch

from growsearch.config.training import OptimizerSettings
from growsearch.graph.compile import compile_for_training
from growsearch.grow.gates import used_before
from growsearch.methods.algorithms.hard_attention import Annealing, UnitAttention
from growsearch.store.run_folder import RunFolder
from growsearch.train.batches import Minibatches
from growsearch.train.extension import TrainingRun
from growsearch.train.trainer import fit

from tiny_runs import assert_old_tasks_unchanged

CONV = {"layers": [{"conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2}}, {"linear": 16}]}
LAYERS = ("shared/L0", "shared/L1")


@pytest.fixture(scope="module")
def hat_run(tmp_path_factory):
    from growsearch.runner import start_run

    from tiny_runs import tiny_options, tiny_space

    space = tiny_space("hat", training={"epochs": 4, "batch_size": 16})
    return start_run(space, tiny_options(), tmp_path_factory.mktemp("hat") / "run")


@pytest.mark.parametrize("network", [None, CONV], ids=["mlp", "conv"])
def test_old_tasks_outputs_are_bit_identical_after_later_tasks(network, hat_run, run_tiny, digits_stream):
    result = hat_run if network is None else run_tiny("hat", network=network, training={"epochs": 3})
    assert_old_tasks_unchanged(result.path, digits_stream)
    assert result.metrics["metrics"]["forgetting"] == 0.0
    final, _ = RunFolder.open(result.path).load_task(4)
    for node_id in LAYERS:
        gates = final.node(node_id).gates
        assert sorted(gates) == [0, 1, 2, 3, 4]
        assert all(set(g.unique().tolist()) <= {0.0, 1.0} for g in gates.values())  # binary at test


def test_weights_between_units_earlier_tasks_use_are_held_and_the_rest_train(hat_run, digits_stream):
    run = RunFolder.open(hat_run.path)
    after_0, _ = run.load_task(0)
    final, _ = run.load_task(4)
    used = {n: used_before(after_0, n, 1) for n in LAYERS}
    assert all(u.any() and not u.all() for u in used.values())  # the regulariser left units free
    held = used["shared/L1"].view(-1, 1) & used["shared/L0"].view(1, -1)
    w0, w4 = after_0.node("shared/L1").weights["0.weight"], final.node("shared/L1").weights["0.weight"]
    assert torch.equal(w4[held], w0[held])
    assert not torch.equal(w4[~held], w0[~held])  # later tasks trained the others


def test_one_step_updates_no_entry_where_cumulative_attention_is_one(hat_run, digits_stream):
    """The gradient mask of eq. 3 (binary): one SGD step of task 1 moves no weight whose two units task 0
    uses, and moves weights elsewhere."""
    from growsearch.methods.hat import HAT

    from tiny_runs import tiny_space

    method = HAT(tiny_space("hat"))
    run = RunFolder.open(hat_run.path)
    committed, _ = run.load_task(0)
    ctx = _context(method, committed, digits_stream, task=1)
    candidate = method.build({}, ctx)
    training = candidate.training
    program = compile_for_training(candidate.graph, 1, train_masks=training.train_masks, gates=training.gates)
    task = digits_stream.tasks[1]
    batches = Minibatches([task.train.x], task.train.y, 16, seed=0)
    training.start(TrainingRun(program, batches, epochs=1))
    before = {n: _weight(program, n).detach().clone() for n in LAYERS}
    parameters = [p for p in program.suffix.parameters() if p.requires_grad]
    settings = OptimizerSettings(name="sgd", lr=0.5, momentum=0.9)
    fit(program.suffix, batches, parameters, settings, steps=3, masked=program.full.masked, training=training)
    for i, node_id in enumerate(LAYERS):
        out_used = used_before(committed, node_id, 1)
        width = before[node_id].shape[1]
        in_used = used_before(committed, LAYERS[0], 1) if i else torch.ones(width, dtype=torch.bool)
        held = out_used.view(-1, 1) & in_used.view(1, -1)
        after = _weight(program, node_id).detach()
        assert torch.equal(after[held], before[node_id][held]), node_id
        assert (after[~held] != before[node_id][~held]).any(), node_id


def test_s_is_annealed_within_each_epoch_as_eq_4_says():
    annealing = Annealing(400.0, batches_per_epoch=5)
    seen = []
    for step in range(1, 11):
        annealing.before_step(step)
        seen.append(annealing.s)
    expected = [1 / 400 + (400 - 1 / 400) * b / 4 for b in range(5)]
    assert seen == pytest.approx(expected + expected)  # restarts every epoch


def test_the_embedding_gradient_is_compensated_as_eq_5_says():
    annealing = Annealing(400.0, 5)
    annealing.s = 37.0
    gate = UnitAttention(6, annealing, cosh_clamp=50.0)
    gate.train()
    e = gate.embedding.detach().clone()
    gate(torch.ones(1, 6)).sum().backward()
    s = 37.0
    raw = s * torch.sigmoid(s * e) * (1 - torch.sigmoid(s * e))  # d sigmoid(s e) / de
    compensated = raw * (400.0 / s) * (torch.cosh(torch.clamp(s * e, -50, 50)) + 1) / (torch.cosh(e) + 1)
    torch.testing.assert_close(gate.embedding.grad, compensated)
    gate.eval()
    assert torch.equal(gate(torch.ones(1, 6))[0], (e > 0).float())  # binary at test


def test_the_record_shows_each_tasks_capacity(hat_run):
    run = RunFolder.open(hat_run.path)
    final, _ = run.load_task(4)
    free_before = 1.0
    for task, record in enumerate(hat_run.records):
        capacity = record.mechanism["capacity"]
        gate = final.node("shared/L1").gates[task]
        layer1 = [c for c in capacity if c["layer"] == 1][0]
        assert layer1["used"] == float(gate.mean())
        assert layer1["free"] <= free_before
        free_before = layer1["free"]
        assert 0 <= record.mechanism["capacity_used"] <= 1


def test_a_search_over_s_max_and_c_against_capacity(run_tiny):
    result = run_tiny(
        "hat",
        options={"search": True},
        search={"n_trials": 3, "objectives": ["accuracy", "capacity_used"], "sampler": "nsga2"},
        training={"epochs": 1},
    )
    for record in result.records:
        decisions = record.decisions
        assert 25 <= decisions["s_max"] <= 800 and 0.1 <= decisions["c"] <= 4
    assert math.isfinite(result.metrics["metrics"]["average_accuracy"])


def _context(method, committed, stream, task):
    from growsearch.methods.base import TaskContext

    return TaskContext(task, stream.tasks[task], committed, method.specs_for(stream.input_shape), (), 0, 5)


def _weight(program, node_id):
    return next(p for p in program.full.node_modules[node_id].parameters() if p.dim() == 2)
