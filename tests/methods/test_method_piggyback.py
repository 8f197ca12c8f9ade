"""Piggyback: the backbone stays bit-identical after the first task; a later task's view is the backbone times
its binary mask (biases unmasked), so old tasks' outputs never change; the straight-through estimator passes
the gradient through the threshold unchanged."""

import pytest
import torch
from torch.nn import functional as F

from growsearch.graph.compile import compile_for_training, compile_view
from growsearch.methods.algorithms.weight_masks import WeightMask, attach_masks
from growsearch.store.run_folder import RunFolder

from tiny_runs import assert_old_tasks_unchanged

CONV = {"layers": [{"conv": {"channels": 4, "kernel": 3, "padding": 1, "pool": 2}}, {"linear": 16}]}
BACKBONE = ("backbone/L0", "backbone/L1")
TRAINING = {"epochs": 3, "lr": 0.01}  # Adam: a mask value moves ~lr a step, so masks flip within a task


@pytest.fixture(scope="module")
def piggyback_run(tmp_path_factory):
    from growsearch.runner import start_run

    from tiny_runs import tiny_options, tiny_space

    space = tiny_space("piggyback", training=TRAINING)
    return start_run(space, tiny_options(), tmp_path_factory.mktemp("piggyback") / "run")


@pytest.mark.parametrize("network", [None, CONV], ids=["mlp", "conv"])
def test_the_backbone_is_bit_identical_and_old_tasks_unchanged(
    network, piggyback_run, run_tiny, digits_stream
):
    result = piggyback_run if network is None else run_tiny("piggyback", network=network, training=TRAINING)
    assert_old_tasks_unchanged(result.path, digits_stream)
    assert result.metrics["metrics"]["forgetting"] == 0.0
    run = RunFolder.open(result.path)
    first, _ = run.load_task(0)
    final, _ = run.load_task(4)
    for node_id in BACKBONE:
        node = final.node(node_id)
        assert node.frozen
        for name, value in first.node(node_id).weights.items():
            assert torch.equal(node.weights[name], value), (node_id, name)
        assert sorted(node.masks) == [1, 2, 3, 4]  # the first task trained the backbone: no mask
        for masks in node.masks.values():
            assert {n: m.shape for n, m in masks.items()} == {
                n: w.shape for n, w in node.weights.items() if w.dim() >= 2
            }  # every weight matrix (filter bank) masked, no bias
            assert all(m.dtype == torch.bool for m in masks.values())


def test_a_later_task_computes_with_the_backbone_times_its_mask(piggyback_run, digits_stream):
    final, _ = RunFolder.open(piggyback_run.path).load_task(4)
    x = digits_stream.tasks[2].test.x
    h = x.flatten(1)
    for node_id in BACKBONE:
        node = final.node(node_id)
        (name,) = [n for n, w in node.weights.items() if w.dim() == 2]
        weight = node.weights[name] * node.masks[2][name]
        h = F.relu(F.linear(h, weight, node.weights[name.replace("weight", "bias")]))
    head = final.node(final.head(2)).weights
    expected = F.linear(h, head["weight"], head["bias"])
    torch.testing.assert_close(compile_view(final, 2).module(x), expected, rtol=0, atol=1e-6)


def test_masks_pick_a_share_of_the_backbone_and_the_record_shows_it(piggyback_run):
    final, _ = RunFolder.open(piggyback_run.path).load_task(4)
    dropped = 0
    for task, record in enumerate(piggyback_run.records):
        mechanism = record.mechanism
        assert mechanism["capacity_used"] == (1.0 if task == 0 else 0.0)
        for layer, node_id in enumerate(BACKBONE):
            (entry,) = [c for c in mechanism["capacity"] if c["layer"] == layer]
            mask = final.node(node_id).masks.get(task)
            kept = 1.0 if mask is None else float(next(iter(mask.values())).float().mean())
            assert entry["picked"] == pytest.approx(kept)
            dropped += kept < 1.0
    assert dropped > 0  # the masks learnt to drop weights


def test_the_straight_through_estimator_passes_the_gradient_through_the_threshold():
    torch.manual_seed(0)
    weight = torch.randn(4, 5)
    mask = WeightMask(weight.shape, init=1e-2, threshold=5e-3)
    with torch.no_grad():
        mask.real[0] = 1e-3  # below the threshold: these weights are dropped
        mask.real[1, :2] = 5e-3  # at the threshold: dropped too (only values above it keep a weight)
    out = mask(weight)
    kept = (mask.real > 5e-3).float()
    assert torch.equal(out, weight * kept)
    assert kept[0].sum() == 0 and kept[1, :2].sum() == 0 and kept[2:].sum() == 10
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    torch.testing.assert_close(mask.real.grad, upstream * weight, rtol=0, atol=0)  # dropped entries too


def test_a_restricted_mask_keeps_the_other_entries_and_gives_them_no_gradient():
    weight = torch.randn(3, 4)
    pickable = torch.zeros(3, 4, dtype=torch.bool)
    pickable[:, :2] = True
    start = torch.ones(3, 4, dtype=torch.bool)
    start[0, 0] = False  # resumed: this entry starts dropped, the others kept
    mask = WeightMask(weight.shape, 1e-2, 5e-3, pickable, start)
    assert torch.equal(mask.binary(), start)
    with torch.no_grad():
        mask.real.fill_(0.0)  # every real value below the threshold
    assert torch.equal(mask.binary(), ~pickable)  # 1 wherever the mask may not pick
    mask(weight).sum().backward()
    assert (mask.real.grad[~pickable] == 0).all() and (mask.real.grad[pickable] != 0).all()


def test_a_masked_module_still_names_its_plain_weight(digits_stream):
    from growsearch.graph.module_graph import ModuleGraph
    from growsearch.methods.base import TaskContext
    from growsearch.methods.piggyback import Piggyback

    from tiny_runs import tiny_space

    method = Piggyback(tiny_space("piggyback"))
    specs = method.specs_for(digits_stream.input_shape)
    empty = ModuleGraph(digits_stream.input_shape)
    ctx = TaskContext(0, digits_stream.tasks[0], empty, specs, (), 0, 5)
    program = compile_for_training(method.build({}, ctx).graph, 0)  # the first task: the backbone trains
    module = program.full.node_modules["backbone/L1"]
    before = {k: v.clone() for k, v in module.state_dict().items()}
    masks = attach_masks(program, {"backbone/L1": {"0.weight": None}}, 1e-2, 5e-3)
    with torch.no_grad():
        masks["backbone/L1", "0.weight"].real.fill_(0.0)  # drop every weight: the forward pass changes
    assert module.state_dict().keys() == before.keys()
    assert all(torch.equal(module.state_dict()[k], v) for k, v in before.items())
    assert torch.equal(module[0].weight, torch.zeros_like(before["0.weight"]))
