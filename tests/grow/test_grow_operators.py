import pytest
import torch

from growsearch.config.network import parse_layers
from growsearch.errors import GraphError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import FREE, ModuleGraph
from growsearch.grow import operators as ops
from growsearch.grow.backbone import layer_specs

SPECS = layer_specs(parse_layers([{"linear": 10}, {"linear": 10}], "test"), (1, 8, 8))
X = torch.rand(6, 1, 8, 8)


def column_graph(tasks: int) -> ModuleGraph:
    graph = ModuleGraph((1, 8, 8))
    for task in range(tasks):
        graph = ops.add_column(graph, task, SPECS, 2)
        graph = ops.freeze(graph, [n for n, node in graph.nodes() if node.owner == task])
    return graph


def test_operators_never_change_their_argument():
    graph = column_graph(2)
    nodes, heads = list(graph), dict(graph.heads)
    weights = {n: {k: v.clone() for k, v in node.weights.items()} for n, node in graph.nodes()}
    ops.add_column(graph, 2, SPECS, 2)
    ops.reuse_prefix(graph, 2, 1, 1, SPECS, 2)
    ops.widen(ops.reuse_prefix(graph, 2, 1, 0, SPECS, 2), "t2/L0", 3)
    ops.prune(ops.track_owners(graph, ["t0/L0"]), 0, 0.5, ["t0/L0"])
    assert list(graph) == nodes and graph.heads == heads
    for n, node in graph.nodes():
        assert all(torch.equal(node.weights[k], weights[n][k]) for k in node.weights)
        assert not node.owners


def test_pnn_column_has_one_adapter_per_layer_over_all_older_columns():
    graph = column_graph(3)
    adapter = graph.node("t2/lateral1")
    assert adapter.inputs == ("t0/L0", "t1/L0") and adapter.merge == "concat"
    assert adapter.spec.in_features == 20 and adapter.spec.hidden == 10  # projection onto n_{i-1} units
    assert graph.node("t2/L1").inputs == ("t2/L1.pre", "t2/lateral1")
    assert set(graph.view(0)) == {"input", "t0/L0", "t0/L1", "t0/head"}  # column 0 sees no later column


def test_reuse_prefix_shares_the_source_modules_below_k():
    graph = column_graph(1)
    grown = ops.reuse_prefix(graph, 1, 0, 1, SPECS, 2)
    assert grown.view(1) == ["input", "t0/L0", "t1/L1", "t1/head"]
    assert grown.layer_nodes(1) == {0: "t0/L0", 1: "t1/L1"}
    only_head = ops.reuse_prefix(graph, 1, 0, 2, SPECS, 2)
    assert only_head.view(1) == ["input", "t0/L0", "t0/L1", "t1/head"]
    with pytest.raises(GraphError, match="outside 0..2"):
        ops.reuse_prefix(graph, 1, 0, 3, SPECS, 2)


def test_widen_keeps_every_existing_output():
    graph = ops.reuse_prefix(ModuleGraph((1, 8, 8)), 0, None, 0, SPECS, 3)
    wider = ops.widen(graph, "t0/L0", 5)
    assert wider.node("t0/L0").spec.out_features == 15 and wider.node("t0/L1").spec.in_features == 15
    # the new units reach the next layer through zero weights: equal up to float summation order
    torch.testing.assert_close(
        compile_view(wider, 0).module(X), compile_view(graph, 0).module(X), rtol=0, atol=1e-6
    )


def test_widen_extends_owner_masks_with_free_entries():
    graph = ops.track_owners(ops.reuse_prefix(ModuleGraph((1, 8, 8)), 0, None, 0, SPECS, 3), ["t0/L0"])
    graph = ops.claim_free(graph, 0, ["t0/L0"])
    wider = ops.widen(graph, "t0/L0", 2)
    owners = wider.node("t0/L0").owners["1.0.weight"]
    assert owners.shape == (12, 64) and (owners[:10] == 0).all() and (owners[10:] == FREE).all()


def test_prune_claims_the_largest_free_weights_per_layer_and_zeroes_the_rest():
    graph = ops.track_owners(ops.reuse_prefix(ModuleGraph((1, 8, 8)), 0, None, 0, SPECS, 3), ["t0/L0"])
    pruned = ops.prune(graph, 0, 0.75, ["t0/L0"])
    before = graph.node("t0/L0").weights["1.0.weight"]
    weight, owners = pruned.node("t0/L0").weights["1.0.weight"], pruned.node("t0/L0").owners["1.0.weight"]
    kept = owners == 0
    assert kept.sum() == round(0.25 * before.numel())
    assert before.abs()[kept].min() >= before.abs()[~kept].max()
    assert (weight[~kept] == 0).all() and torch.equal(weight[kept], before[kept])
    assert (pruned.node("t0/L0").owners["1.0.bias"] == FREE).all()  # biases are left to claim_free


def test_prune_never_touches_weights_owned_by_an_earlier_task():
    graph = ops.track_owners(ops.reuse_prefix(ModuleGraph((1, 8, 8)), 0, None, 0, SPECS, 3), ["t0/L0"])
    first = ops.prune(graph, 0, 0.5, ["t0/L0"])
    second = ops.prune(first, 1, 0.5, ["t0/L0"])
    owners_first, owners_second = (
        first.node("t0/L0").owners["1.0.weight"],
        second.node("t0/L0").owners["1.0.weight"],
    )
    assert torch.equal(owners_second[owners_first == 0], owners_first[owners_first == 0])
    assert ((owners_second == 1) & (owners_first != FREE)).sum() == 0
