"""Packed training: K candidates of one task trained as one computation end where each would end alone.

For RCL (new units of different widths, a layer with none), CLEAS (old units dropped: weights held at
zero) and MNTDP-D (different reuse depths: different nodes and inputs), each packed candidate's final
weights match its unpacked training (`train_candidate`) to float tolerance and its validation accuracy is
identical; a diverging candidate fails alone, a stopped one stops alone, held weights stay bit-identical,
and candidates that cannot share a template are refused before anything trains."""

from __future__ import annotations

import dataclasses
import pickle

import optuna
import pytest
import torch

from growsearch.errors import TrainingError
from growsearch.graph.align import align
from growsearch.graph.compile import compile_for_training
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods import get_method
from growsearch.methods.base import TaskContext
from growsearch.train import packed as packed_module
from growsearch.train.candidate import prefix_outputs, train_candidate
from growsearch.train.frozen_modules import FrozenModules
from growsearch.train.packed import NotPackable, PackMember, train_packed
from growsearch.train.prefix_cache import PrefixCache

from tiny_runs import tiny_space

TRAINING = {"epochs": 3, "optimizer": "adam", "lr": 0.01, "weight_decay": 0.001}


def _task_one(method_name: str, stream, n: int, **sections):
    """`n` candidates of `method_name` for task 1 (decisions sampled at random), on a trained task 0."""
    space = tiny_space(method_name, training=TRAINING, **sections)
    method = get_method(method_name)(space)
    specs = method.specs_for(stream.input_shape)
    ctx0 = TaskContext(0, stream.tasks[0], ModuleGraph(stream.input_shape), specs, (), seed=0, n_tasks=5)
    torch.manual_seed(0)
    first = optuna.create_study().ask()
    base = method.build(method.decide(first, ctx0), ctx0).graph
    committed = train_candidate(
        base, 0, stream.tasks[0].train, stream.tasks[0].val, space.training, seed=1
    ).graph
    for _, node in committed.nodes():
        node.frozen = True
    ctx = TaskContext(1, stream.tasks[1], committed, specs, ({},), seed=0, n_tasks=5)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    graphs = []
    while len(graphs) < n:
        decisions = method.decide(study.ask(), ctx)
        torch.manual_seed(100 + len(graphs))
        try:
            graphs.append(method.build(decisions, ctx).graph)
        except TrainingError:  # CLEAS: an architecture with an empty layer
            continue
    return space, graphs


def _train_both(stream, space, graphs, on_epoch=None):
    task = stream.tasks[1]
    alone = [
        train_candidate(g, 1, task.train, task.val, space.training, seed=10 + i) for i, g in enumerate(graphs)
    ]
    members = [PackMember(g, 10 + i, (on_epoch or {}).get(i)) for i, g in enumerate(graphs)]
    return alone, train_packed(members, 1, task.train, task.val, space.training).outcomes


def _assert_same_training(alone, packed):
    assert packed.error is None
    assert packed.result.val_accuracy == alone.val_accuracy
    assert packed.train_macs == alone.train_macs
    assert [e.train_loss for e in packed.result.epochs] == pytest.approx(
        [e.train_loss for e in alone.epochs], abs=1e-5
    )
    assert list(packed.result.graph) == list(alone.graph)
    for node_id, node in alone.graph.nodes():
        for name, value in node.weights.items():
            torch.testing.assert_close(
                packed.result.graph.node(node_id).weights[name], value, atol=2e-5, rtol=1e-4
            )


CONV = {"network": {"layers": [{"conv": {"channels": 4, "kernel": 3, "padding": 1}}, {"linear": 8}]}}


@pytest.mark.parametrize(
    ("method", "sections"),
    [("rcl", {}), ("cleas", {}), ("mntdp-d", {}), ("rcl", CONV)],
    ids=["rcl", "cleas", "mntdp-d", "rcl-conv (vmap)"],
)
def test_a_packed_candidate_ends_where_it_would_end_alone(method, sections, digits_stream):
    space, graphs = _task_one(method, digits_stream, 3, **sections)
    shapes = {
        tuple(sorted((n, tuple(w.shape)) for n, node in g.nodes() for w in node.weights.values()))
        for g in graphs
    }
    assert len(shapes) > 1  # the candidates really differ in shape
    initial = [g.copy() for g in graphs]
    alone, packed = _train_both(digits_stream, space, graphs)
    for one, pack in zip(alone, packed, strict=True):
        _assert_same_training(one, pack)
    for graph, before in zip(graphs, initial, strict=True):  # the graphs handed in are untouched
        for node_id, node in graph.nodes():
            for name, value in node.weights.items():
                assert torch.equal(value, before.node(node_id).weights[name])


def _stacked_model(graphs, task: int = 1):
    """The pack's model over its candidates' stacked initial weights, as `train_packed` builds it."""
    alignment = align([g.copy() for g in graphs], task)
    program = compile_for_training(alignment.template, task)
    in_suffix = {id(p): name for name, p in program.suffix.named_parameters()}
    names = {
        (node_id, name): in_suffix[id(p)]
        for node_id in alignment.trainable
        for name, p in program.full.node_modules[node_id].named_parameters()
    }
    stack = packed_module._Stack(alignment, names, torch.device("cpu"))
    n_inputs = len(prefix_outputs(program, torch.zeros(1, *graphs[0].input_shape), torch.device("cpu")))
    return program, packed_module._StackedModel(program.suffix, stack.params, n_inputs)


@pytest.mark.parametrize("method", ["rcl", "cleas", "mntdp-d"])
def test_dense_candidates_run_as_batched_products_that_compute_what_vmap_computes(method, digits_stream):
    """A pack of dense candidates runs its suffix as batched matrix products (`StackedSuffix`), not vmap:
    the logits on per-candidate and on shared samples, and every stacked weight's gradient, are vmap's."""
    _, graphs = _task_one(method, digits_stream, 3)
    program, model = _stacked_model(graphs)
    assert model.direct is not None
    x = digits_stream.tasks[1].train.x[:20]
    shared = prefix_outputs(program, x, torch.device("cpu"))
    order = torch.stack([torch.randperm(20, generator=torch.Generator().manual_seed(k)) for k in range(3)])
    stacked = [t[order] for t in shared]
    for direct, through_vmap in (
        (model(*stacked), model.per_candidate(model.params, *stacked)),
        (model.on_shared(*shared), model.shared_inputs(model.params, *shared)),
    ):
        torch.testing.assert_close(direct, through_vmap, atol=1e-6, rtol=1e-5)
    gradients = []
    for logits in (model(*stacked), model.per_candidate(model.params, *stacked)):
        gradients.append(torch.autograd.grad(logits.square().sum(), list(model.params.values())))
    for direct, through_vmap in zip(*gradients, strict=True):
        torch.testing.assert_close(direct, through_vmap, atol=1e-5, rtol=1e-4)


def test_a_pack_with_convolutions_keeps_vmap(digits_stream):
    _, graphs = _task_one("rcl", digits_stream, 2, **CONV)
    assert _stacked_model(graphs)[1].direct is None


def test_a_diverging_candidate_fails_alone_and_a_stopped_one_stops_alone(digits_stream, monkeypatch):
    """...and the pack sheds them: after the epoch they stop in, the stacked weights hold only the live
    candidate's row (its optimiser state with it), and it ends where it ends alone."""
    space, graphs = _task_one("rcl", digits_stream, 3)
    rows_per_batch, weight_rows = [], []
    forward = packed_module._StackedModel.forward

    def counted(model, *inputs):
        rows_per_batch.append(inputs[0].shape[0])
        weight_rows.append({p.shape[0] for p in model.params.values()})
        return forward(model, *inputs)

    monkeypatch.setattr(packed_module._StackedModel, "forward", counted)
    graphs[1].node("t1/head").weights["weight"].fill_(float("inf"))  # its loss is not finite at once

    class Stop(Exception):
        pass

    def stop_after_first(stats):
        if stats.epoch == 0:
            raise Stop

    task = digits_stream.tasks[1]
    members = [  # the one that trains on is the middle row: the rows kept are its own
        PackMember(graphs[1], 11),
        PackMember(graphs[0], 10),
        PackMember(graphs[2], 12, stop_after_first),
    ]
    assert space.training.optimizer == "adam"  # per-entry state that the shed rows take with them
    packed = train_packed(members, 1, task.train, task.val, space.training).outcomes
    _assert_same_training(
        train_candidate(graphs[0], 1, task.train, task.val, space.training, seed=10), packed[1]
    )
    assert isinstance(packed[0].error, TrainingError) and packed[0].result is None
    assert "at epoch 1, step 1" in str(packed[0].error)
    assert isinstance(packed[2].error, Stop) and packed[2].result is None
    assert packed[2].train_macs > 0
    per_epoch = len(rows_per_batch) // space.training.epochs
    assert set(rows_per_batch[:per_epoch]) == {3} and set(rows_per_batch[per_epoch:]) == {1}
    assert weight_rows[0] == {3} and all(rows == {1} for rows in weight_rows[per_epoch:])


def test_weights_a_candidate_does_not_own_stay_bit_identical(digits_stream):
    space, graphs = _task_one("rcl", digits_stream, 2)
    for graph in graphs:  # entries of the top layer owned by an earlier task (as PackNet's would be)
        node = graph.node("t1/head")
        owners = torch.full(node.weights["weight"].shape, -1, dtype=torch.int16)
        owners[:, ::2] = 0
        node.owners["weight"] = owners
    before = [g.node("t1/head").weights["weight"].clone() for g in graphs]
    _, packed = _train_both(digits_stream, space, graphs)
    for held, outcome in zip(before, packed, strict=True):
        after = outcome.result.graph.node("t1/head").weights["weight"]
        assert torch.equal(after[:, ::2], held[:, ::2])
        assert not torch.equal(after[:, 1::2], held[:, 1::2])


def test_candidates_that_cannot_share_a_template_are_refused_before_training(digits_stream):
    space, graphs = _task_one("rcl", digits_stream, 2)
    node = graphs[1].node("t1/head")
    node.spec = dataclasses.replace(node.spec, activation="tanh")  # differs in more than its width
    task = digits_stream.tasks[1]
    with pytest.raises(NotPackable, match="t1/head"):
        train_packed(
            [PackMember(g, i) for i, g in enumerate(graphs)], 1, task.train, task.val, space.training
        )


def test_part_of_a_pack_retrains_bit_for_bit_in_the_pack_layout(digits_stream):
    """A resumed pack retrains its unfinished candidates alone in the layout the whole pack had: the
    padding (and so the float rounding) is the same, so the weights are identical, not only close."""
    space, graphs = _task_one("rcl", digits_stream, 3)
    task = digits_stream.tasks[1]
    whole = train_packed(
        [PackMember(g, 10 + i) for i, g in enumerate(graphs)], 1, task.train, task.val, space.training
    )
    part = train_packed(
        [PackMember(graphs[2], 12)], 1, task.train, task.val, space.training, layout=whole.layout
    )
    again, first = part.outcomes[0].result.graph, whole.outcomes[2].result.graph
    assert part.layout == whole.layout
    for node_id, node in first.nodes():
        for name, value in node.weights.items():
            assert torch.equal(again.node(node_id).weights[name], value), (node_id, name)


def test_a_task_s_later_trials_reuse_its_frozen_prefix_outputs_and_are_charged_only_where_they_ran(
    digits_stream,
):
    space, candidates = _task_one("rcl", digits_stream, 7)
    by_prefix: dict[str, list[ModuleGraph]] = {}  # a candidate that adds no unit below has another frontier
    for graph in candidates:
        by_prefix.setdefault(compile_for_training(graph.copy(), 1).prefix.code, []).append(graph)
    graphs = max(by_prefix.values(), key=len)[:4]
    assert len(graphs) == 4
    task = digits_stream.tasks[1]
    cache = PrefixCache(1 << 30)
    alone = [
        train_candidate(g, 1, task.train, task.val, space.training, seed=10 + i) for i, g in enumerate(graphs)
    ]
    kept = [
        train_candidate(g, 1, task.train, task.val, space.training, seed=10 + i, prefix_cache=cache)
        for i, g in enumerate(graphs[:2])
    ]
    members = [PackMember(g, 12 + i) for i, g in enumerate(graphs[2:])]
    packed = train_packed(members, 1, task.train, task.val, space.training, prefix_cache=cache).outcomes
    uncached = train_packed(members, 1, task.train, task.val, space.training).outcomes
    prefix = packed_module._macs(graphs[0], 1)[0] * len(task.train)  # one pass over the training samples
    assert prefix > 0
    for first, again in zip(alone[:2], kept, strict=True):  # the same training, bit for bit
        assert again.val_accuracy == first.val_accuracy
        for node_id, node in first.graph.nodes():
            for name, value in node.weights.items():
                assert torch.equal(again.graph.node(node_id).weights[name], value)
    assert kept[0].train_macs == alone[0].train_macs  # the first trial ran the prefix
    assert kept[1].train_macs == alone[1].train_macs - prefix  # the second read what it kept
    for outcome, plain in zip(packed, uncached, strict=True):
        assert outcome.result.val_accuracy == plain.result.val_accuracy
        assert outcome.train_macs == plain.train_macs - prefix

    changed = graphs[0].copy()  # a candidate whose frozen prefix computes something else
    node = changed.node("t0/L0")  # the committed first layer
    assert node.frozen
    next(iter(node.weights.values())).add_(0.01)
    program = compile_for_training(changed, 1)
    assert cache.outputs(program, task.train.x, torch.device("cpu"))[1]  # computed, not read
    program = compile_for_training(graphs[0].copy(), 1)
    assert not cache.outputs(program, task.train.x, torch.device("cpu"))[1]
    assert pickle.loads(pickle.dumps(cache))._entries == []  # shipped (to a Ray worker) empty


def test_a_task_s_later_trials_reuse_its_compiled_frozen_nodes_and_train_the_same(digits_stream, monkeypatch):
    """The committed columns' modules, built for one candidate, serve the task's later candidates alone
    and packed (the same objects, no copy of their weights), and training ends bit for bit as without;
    a candidate whose committed node differs builds its own; the cache is shipped empty."""
    space, graphs = _task_one("rcl", digits_stream, 3)
    task = digits_stream.tasks[1]
    reused: list[set[str]] = []
    compile_real = packed_module.compile_for_training

    def spied(graph, task_id, *args, modules=None, **kwargs):
        reused.append(set(modules or {}))
        return compile_real(graph, task_id, *args, modules=modules, **kwargs)

    monkeypatch.setattr("growsearch.train.candidate.compile_for_training", spied)
    monkeypatch.setattr(packed_module, "compile_for_training", spied)
    frozen = {n for n in graphs[0].view(1) if graphs[0].node(n).frozen and graphs[0].node(n).weights}
    cache = FrozenModules()

    def train(graph, seed, **kwargs):
        return train_candidate(graph, 1, task.train, task.val, space.training, seed=seed, **kwargs)

    first = train(graphs[0], 10, frozen_modules=cache)
    second = train(graphs[1], 11, frozen_modules=cache)
    assert reused == [set(), frozen] and frozen
    fresh = train(graphs[1], 11)
    _assert_bit_identical(second.graph, fresh.graph)
    assert second.val_accuracy == fresh.val_accuracy and first.graph is not graphs[0]

    members = [PackMember(graphs[1], 11), PackMember(graphs[2], 12)]
    packed = train_packed(members, 1, task.train, task.val, space.training, frozen_modules=cache).outcomes
    alone = train_packed(members, 1, task.train, task.val, space.training).outcomes
    assert reused[-2] == frozen and reused[-1] == set()
    for with_cache, without in zip(packed, alone, strict=True):
        _assert_bit_identical(with_cache.result.graph, without.result.graph)

    changed = graphs[2].copy()
    node_id = sorted(frozen)[0]
    weight = next(iter(changed.node(node_id).weights))
    changed.node(node_id).weights[weight] = changed.node(node_id).weights[weight] + 1.0
    train(changed, 12, frozen_modules=cache)
    assert reused[-1] == frozen - {node_id}  # its own module for the node that differs
    assert pickle.loads(pickle.dumps(cache))._kept == {}


def _assert_bit_identical(graph, expected):
    assert list(graph) == list(expected)
    for node_id, node in expected.nodes():
        for name, value in node.weights.items():
            assert torch.equal(graph.node(node_id).weights[name], value), (node_id, name)
