"""Two node forms the compiler owns: a node that shares a frozen node's weights (stored once, saved and
loaded as a reference), and a mixed operation over stacked inputs (DARTS)."""

import pytest
import torch

from growsearch.errors import GraphError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.serialize import load_graph, save_graph
from growsearch.graph.specs import Activation, Head, Linear
from growsearch.grow import operators as ops
from growsearch.methods._learn_to_grow_mix import Mix


def _graph() -> ModuleGraph:
    torch.manual_seed(0)
    graph = ModuleGraph((4,))
    graph.add("z/old", Linear(4, 4), [INPUT], 0, frozen=True)
    graph.add("a/new", Linear(4, 4), [INPUT], 1)
    # sorts before its target: loading must still add the target first
    graph.add("a/shared", Linear(4, 4), ["a/new"], 1, shares="z/old")
    graph.add("head", Head(4, 2), ["a/shared"], 1)
    graph.set_head(1, "head")
    return graph


def test_a_sharing_node_computes_with_its_targets_weights_and_stores_none(tmp_path):
    graph = _graph()
    node = graph.node("a/shared")
    assert node.frozen and node.weights == {} and node.n_parameters == 0
    # the view computes with z/old's weights although z/old itself is not on it
    assert graph.view_parameters(1) == graph.n_parameters(["a/new", "z/old", "head"]) == 20 + 20 + 10
    x = torch.randn(3, 4)
    target = graph.node("z/old").spec.build()
    target.load_state_dict(graph.node("z/old").weights)
    new = compile_view(graph, 1, output="a/new").module(x)
    torch.testing.assert_close(compile_view(graph, 1, output="a/shared").module(x), target(new))
    loaded = load_graph(save_graph(graph, tmp_path / "checkpoint"))
    assert loaded.node("a/shared").shares == "z/old" and loaded.node("a/shared").weights == {}
    assert torch.equal(compile_view(loaded, 1).module(x), compile_view(graph, 1).module(x))


def test_only_a_frozen_node_of_the_same_spec_can_be_shared():
    graph = _graph()
    with pytest.raises(GraphError, match="may share only a frozen node of a matching spec"):
        graph.add("b", Linear(4, 4), [INPUT], 2, shares="a/new")  # trainable
    with pytest.raises(GraphError, match="may share only a frozen node of a matching spec"):
        graph.add("c", Linear(4, 4, activation=None), [INPUT], 2, shares="z/old")


def test_a_trainable_owner_tracked_node_can_be_shared_and_a_task_sees_only_what_tasks_up_to_it_own():
    graph = _graph()
    graph = ops.track_owners(graph, ["a/new"])
    graph = ops.claim_free(graph, 1, ["a/new"])  # task 1 owns every entry; the node still trains
    graph.add("b", Linear(4, 4), [INPUT], 2, shares="a/new")
    graph.set_head(2, "b")
    x = torch.randn(3, 4)
    seen = compile_view(graph, 2, output="b").module(x)
    assert torch.equal(seen, compile_view(graph, 1, output="a/new").module(x))
    graph.add("c", Linear(4, 4), [INPUT], 0, shares="a/new")  # task 0 sees none of task 1's entries
    assert torch.equal(compile_view(graph, 0, output="c").module(x), torch.zeros(3, 4))


def test_a_mix_node_weights_its_stacked_inputs_by_the_softmax_of_its_alpha():
    torch.manual_seed(0)
    graph = ModuleGraph((4,))
    graph.add("one", Linear(4, 3), [INPUT], 0)
    graph.add("two", Linear(4, 3, activation="tanh"), [INPUT], 0)
    graph.add("mix", Mix(2, (0.0, 1.0)), ["one", "two"], 0, merge="stack")
    graph.add("out", Activation(None), ["mix"], 0)
    graph.set_head(0, "out")
    graph.node("mix").weights["alpha"] = torch.tensor([0.0, 1.0])
    x = torch.randn(5, 4)
    compiled = compile_view(graph, 0)
    parts = [compile_view(graph, 0, output=n).module(x) for n in ("one", "two")]
    weights = torch.softmax(torch.tensor([0.0, 1.0]), 0)
    torch.testing.assert_close(compiled.module(x), weights[0] * parts[0] + weights[1] * parts[1])
    mix = compiled.node_modules["mix"]
    torch.testing.assert_close(mix.expected_cost(), weights[1])
    with pytest.raises(GraphError, match="stacks inputs .* of unequal shapes"):
        graph.add("bad", Linear(4, 2), [INPUT], 0)
        graph.add("mix2", Mix(2), ["one", "bad"], 0, merge="stack")
