"""XdG: a task's silenced units output nothing and get no gradient from its loss; its gate opens a fixed
share of each hidden layer, drawn from the task's seed; SI and EWC pull weights important to earlier
tasks back towards where those tasks left them."""

import math

import pytest
import torch

from growsearch.config.training import OptimizerSettings
from growsearch.graph.compile import compile_for_training, compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods.base import TaskContext
from growsearch.methods.xdg import XdG, draw_gate
from growsearch.store.run_folder import RunFolder
from growsearch.train.batches import Minibatches
from growsearch.train.extension import Training
from growsearch.train.stabilisers import ANCHOR, IMPORTANCE, Stabiliser
from growsearch.train.trainer import fit

from tiny_runs import tiny_options, tiny_space

LAYERS = ("shared/L0", "shared/L1")
CONV = {"layers": [{"conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2}}, {"linear": 16}]}


def _space(**options):
    return tiny_space(
        "xdg",
        network={"layers": [{"linear": 20}, {"linear": 20}]},
        training={"epochs": 4, "optimizer": "adam", "lr": 0.01},
        options=options,
    )


@pytest.fixture(scope="module")
def xdg_runs(tmp_path_factory):
    from growsearch.runner import start_run

    root = tmp_path_factory.mktemp("xdg")
    return {
        kind: start_run(_space(stabiliser=kind, strength=strength), tiny_options(), root / kind)
        for kind, strength in (("none", 0.0), ("si", 10.0), ("ewc", 1000.0))
    }


def _context(method, committed, stream, task):
    return TaskContext(task, stream.tasks[task], committed, method.specs_for(stream.input_shape), (), 7, 5)


def test_silenced_units_output_nothing_and_get_no_gradient(xdg_runs, digits_stream):
    method = XdG(_space(stabiliser="none"))
    committed, _ = RunFolder.open(xdg_runs["none"].path).load_task(0)
    ctx = _context(method, committed, digits_stream, task=1)
    candidate = method.build({}, ctx)
    graph = candidate.graph
    x = digits_stream.tasks[1].train.x
    for node_id in LAYERS:
        closed = graph.node(node_id).gates[1] == 0
        outputs = compile_view(graph, 1, output=node_id, include_free=True).module(x)
        assert (outputs[:, closed] == 0).all() and (outputs[:, ~closed] != 0).any()
    program = compile_for_training(graph, 1)
    weights = {n: next(p for p in program.full.node_modules[n].parameters() if p.dim() == 2) for n in LAYERS}
    before = {n: w.detach().clone() for n, w in weights.items()}
    task = digits_stream.tasks[1]
    batches = Minibatches([task.train.x], task.train.y, 16, seed=0)
    parameters = [p for p in program.suffix.parameters() if p.requires_grad]
    fit(program.suffix, batches, parameters, OptimizerSettings(name="sgd", lr=0.5), steps=2)
    gate0, gate1 = (graph.node(n).gates[1] == 0 for n in LAYERS)
    assert torch.equal(weights["shared/L0"][gate0], before["shared/L0"][gate0])  # into silenced units
    assert torch.equal(weights["shared/L1"][gate1], before["shared/L1"][gate1])
    assert torch.equal(weights["shared/L1"][:, gate0], before["shared/L1"][:, gate0])  # out of them
    assert not torch.equal(weights["shared/L1"][~gate1], before["shared/L1"][~gate1])


def test_each_task_opens_a_fixed_share_drawn_from_its_seed(xdg_runs):
    final, _ = RunFolder.open(xdg_runs["none"].path).load_task(4)
    for node_id in LAYERS:
        gates = final.node(node_id).gates
        assert [int(g.sum()) for g in gates.values()] == [4] * 5  # round(0.2 * 20) each
        assert len({tuple(g.tolist()) for g in gates.values()}) > 1
    assert torch.equal(draw_gate(20, 0.8, seed=3), draw_gate(20, 0.8, seed=3))
    record = xdg_runs["none"].records[2].mechanism
    assert record["gates"][0]["open"] == 4 and record["capacity_used"] == pytest.approx(0.2)


def test_a_stabiliser_holds_weights_earlier_tasks_found_important(xdg_runs):
    """Task 0's weights drift less over tasks 1..4 with SI or EWC than with gating alone."""

    def drift(kind):
        run = RunFolder.open(xdg_runs[kind].path)
        first, last = run.load_task(0)[0], run.load_task(4)[0]
        return sum(
            float((last.node(n).weights[k] - v).abs().sum())
            for n in LAYERS
            for k, v in first.node(n).weights.items()
        )

    assert drift("si") < 0.8 * drift("none")
    assert drift("ewc") < 0.8 * drift("none")
    final, _ = RunFolder.open(xdg_runs["si"].path).load_task(4)
    state = final.node("shared/L0").state
    assert any(k.startswith(IMPORTANCE) for k in state) and any(k.startswith(ANCHOR) for k in state)
    means = [r.mechanism["gates"][0]["mean_importance"] for r in xdg_runs["si"].records]
    assert means == sorted(means) and means[0] > 0  # importance accumulates over tasks


def test_si_integrates_minus_update_times_task_gradient(digits_stream):
    """One SGD step without momentum: omega = -delta * g = lr * g^2 for every weight (no penalty yet)."""
    method = XdG(_space())
    ctx = _context(method, ModuleGraph(digits_stream.input_shape), digits_stream, task=0)
    graph = method.build({}, ctx).graph
    stabiliser = Stabiliser("si", 1.0, graph, LAYERS)
    program = compile_for_training(graph, 0)
    stabiliser.bind(program)
    training = Training(
        penalty=stabiliser.penalty, before_step=stabiliser.before_step, after_step=stabiliser.after_step
    )
    task = digits_stream.tasks[0]
    batches = Minibatches([task.train.x], task.train.y, 32, seed=0)
    parameters = [p for p in program.suffix.parameters() if p.requires_grad]
    settings = OptimizerSettings(name="sgd", lr=0.1)
    fit(program.suffix, batches, parameters, settings, steps=1, training=training)
    for key, parameter in stabiliser.parameters.items():
        torch.testing.assert_close(stabiliser.path[key], 0.1 * parameter.grad**2)


def test_ewc_importance_is_the_fisher_with_sampled_labels(xdg_runs, digits_stream):
    """Task 0's importance equals a direct mean of squared log-likelihood gradients over its samples."""
    run = RunFolder.open(xdg_runs["ewc"].path)
    graph, _ = run.load_task(0)
    module = compile_view(graph, 0).module
    train = digits_stream.tasks[0].train
    stored = graph.node("shared/L1").state[IMPORTANCE + "0.weight"]
    assert stored.shape == graph.node("shared/L1").weights["0.weight"].shape
    assert float(stored.sum()) > 0
    weight = next(p for n, p in module.named_parameters() if p.shape == stored.shape)
    weight.requires_grad_(True)
    total = torch.zeros_like(stored)
    for i in range(len(train)):
        logits = module(train.x[i : i + 1])
        for label in range(logits.shape[1]):  # the expectation over the model's softmax, exactly
            p = torch.softmax(logits, 1)[0, label].detach()
            (grad,) = torch.autograd.grad(torch.log_softmax(logits, 1)[0, label], weight, retain_graph=True)
            total += p * grad**2
    expected = total / len(train)
    # sampled labels estimate this expectation: same scale, strongly correlated
    correlation = torch.corrcoef(torch.stack([stored.flatten(), expected.flatten()]))[0, 1]
    assert correlation > 0.8 and 0.5 < float(stored.sum() / expected.sum()) < 2


def test_end_to_end_on_a_conv_backbone(run_tiny):
    result = run_tiny("xdg", network=CONV, training={"epochs": 2})
    assert math.isfinite(result.metrics["metrics"]["average_accuracy"])
    final, _ = RunFolder.open(result.path).load_task(4)
    assert final.node("shared/L0").gates[4].shape == (4,)  # a gate per channel


def test_a_search_over_the_gated_fraction_against_capacity(run_tiny):
    result = run_tiny(
        "xdg",
        options={"search": True},
        search={"n_trials": 3, "objectives": ["accuracy", "capacity_used"], "sampler": "nsga2"},
        training={"epochs": 1},
    )
    for record in result.records:
        assert 0.5 <= record.decisions["gated_fraction"] <= 0.95
