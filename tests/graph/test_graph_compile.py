import pytest
import torch
from torch import nn

from growsearch.config.network import parse_layers
from growsearch.errors import GraphError
from growsearch.graph.compile import compile_for_training, compile_view
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.specs import Conv2d, Head, Linear
from growsearch.grow import operators as ops
from growsearch.grow.backbone import layer_specs


def mlp_graph() -> ModuleGraph:
    graph = ModuleGraph((1, 8, 8))
    graph.add("a", Linear(64, 12, flatten=True), [INPUT], 0, layer=0)
    graph.add("b", Linear(12, 12), ["a"], 0, layer=1)
    graph.add("head", Head(12, 3), ["b"], 0)
    graph.set_head(0, "head")
    return graph


def test_compiled_view_computes_the_same_as_a_hand_written_sequential():
    graph = mlp_graph()
    weights = {n: graph.node(n).weights for n in ("a", "b", "head")}
    reference = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 3)
    )
    with torch.no_grad():
        for layer, name in zip((1, 3, 5), ("a", "b", "head"), strict=True):
            prefix = "1.0." if name == "a" else ("0." if name == "b" else "")
            reference[layer].weight.copy_(weights[name][f"{prefix}weight"])
            reference[layer].bias.copy_(weights[name][f"{prefix}bias"])
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(compile_view(graph, 0).module(x), reference(x))


def test_generated_code_is_straight_line_with_sum_merges():
    specs = layer_specs(parse_layers([{"linear": 8}, {"linear": 8}], "test"), (1, 8, 8))
    graph = ModuleGraph((1, 8, 8))
    for task in range(2):
        graph = ops.freeze(ops.add_column(graph, task, specs, 2), [n for n, _ in graph.nodes()])
    code = compile_view(graph, 1).module.code
    assert "for " not in code and code.count("+") == 2  # the lateral sums of layer 1 and of the head


def test_frozen_prefix_is_split_off_and_gives_the_same_outputs():
    graph = mlp_graph()
    graph.node("a").frozen = True
    program = compile_for_training(graph, 0)
    x = torch.rand(7, 1, 8, 8)
    assert program.prefix is not None
    assert program.suffix_nodes == ["b", "head"]
    assert [name for name, _ in program.suffix.named_children()] == ["b_0", "b_1", "head"]  # leaves, inlined
    assert torch.equal(program.suffix(program.prefix(x)), program.full.module(x))


def test_nothing_frozen_means_no_prefix():
    program = compile_for_training(mlp_graph(), 0)
    assert program.prefix is None


def test_a_shape_mismatch_names_the_node():
    graph = mlp_graph()
    with pytest.raises(GraphError, match="node 'c'.*expects input of 10 features, got shape \\(12,\\)"):
        graph.add("c", Linear(10, 4), ["b"], 0)


def test_a_sum_of_unequal_shapes_is_refused():
    graph = mlp_graph()
    graph.add("d", Linear(12, 5), ["a"], 0)
    with pytest.raises(GraphError, match="unequal shapes"):
        graph.add("e", Linear(12, 5), ["a", "d"], 0, merge="sum")


def test_concat_merge_widens_the_channel_dimension():
    graph = ModuleGraph((3, 8, 8))
    graph.add("c1", Conv2d(3, 4), [INPUT], 0)
    graph.add("c2", Conv2d(3, 6), [INPUT], 0)
    graph.add("joined", Conv2d(10, 2, pool=2), ["c1", "c2"], 0, merge="concat")
    graph.add("head", Head(2 * 4 * 4, 5, flatten=True), ["joined"], 0)
    graph.set_head(0, "head")
    assert graph.shapes()["joined"] == (2, 4, 4)
    assert compile_view(graph, 0).module(torch.rand(2, 3, 8, 8)).shape == (2, 5)


def test_a_view_without_a_trainable_node_cannot_be_trained():
    graph = ops.freeze(mlp_graph(), ["a", "b", "head"])
    with pytest.raises(GraphError, match="no trainable node"):
        compile_for_training(graph, 0)


def test_a_refused_node_leaves_the_graph_as_it_was():
    graph = mlp_graph()
    before = list(graph)
    with pytest.raises(GraphError):
        graph.add("c", Linear(10, 4), ["b"], 0)
    assert list(graph) == before


def test_a_copy_clones_every_tensor_and_a_sharing_copy_none():
    graph = mlp_graph()
    deep, sharing = graph.copy(), graph.sharing_copy()
    for node_id, node in graph.nodes():
        for name, value in node.weights.items():
            assert deep.node(node_id).weights[name] is not value
            assert torch.equal(deep.node(node_id).weights[name], value)
            assert sharing.node(node_id).weights[name] is value
    name = next(iter(graph.node("b").weights))
    sharing.node("b").weights[name] = torch.zeros(1)  # replaced in the copy alone
    sharing.add("c", Linear(12, 12), ["b"], 1)  # its own dicts and structure: the original is untouched
    assert "c" not in dict(graph.nodes()) and all(v.numel() > 1 for v in graph.node("b").weights.values())
