"""Per-task data on a node, compiled into that task's view only: a gate per output unit (HAT, XdG, CLNP),
a mask per weight (Piggyback, CPG), and a layer recombining a frozen layer's filters (DAN)."""

import pytest
import torch
from torch import nn

from growsearch.errors import CheckpointError, GraphError
from growsearch.graph.compile import compile_for_training, compile_view
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.serialize import load_graph, save_graph
from growsearch.graph.specs import Conv2d, Head, Linear
from growsearch.methods._dan_combination import Combination


def _two_task_graph() -> ModuleGraph:
    torch.manual_seed(0)
    graph = ModuleGraph((1, 6, 6))
    graph.add("conv", Conv2d(1, 3, 3, padding=1, pool=2), [INPUT], 0)
    graph.add("dense", Linear(27, 5, flatten=True), ["conv"], 0)
    for task in (0, 1):
        graph.add(f"t{task}/head", Head(5, 2), ["dense"], task)
        graph.set_head(task, f"t{task}/head")
    return graph


def test_a_gate_multiplies_its_tasks_units_only_and_round_trips(tmp_path):
    graph = _two_task_graph()
    x = torch.randn(4, 1, 6, 6)
    plain = {t: compile_view(graph, t, output="dense").module(x) for t in (0, 1)}
    graph.node("conv").gates[1] = torch.tensor([1.0, 0.0, 1.0])
    graph.node("dense").gates[1] = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5])
    assert torch.equal(compile_view(graph, 0, output="dense").module(x), plain[0])  # task 0 untouched
    conv = compile_view(graph, 1, output="conv").module(x)
    assert (conv[:, 1] == 0).all() and (conv[:, 0] != 0).any()
    dense = compile_view(graph, 1, output="dense").module(x)
    assert (dense[:, [0, 3]] == 0).all()
    loaded = load_graph(save_graph(graph, tmp_path / "c"))
    assert torch.equal(loaded.node("dense").gates[1], graph.node("dense").gates[1])
    assert torch.equal(compile_view(loaded, 1).module(x), compile_view(graph, 1).module(x))


def test_a_gate_of_the_wrong_width_is_refused_naming_the_node():
    graph = _two_task_graph()
    graph.node("dense").gates[0] = torch.ones(4)
    with pytest.raises(GraphError, match="node 'dense': task 0's gate has shape \\(4,\\); the node has 5"):
        compile_view(graph, 0)


def test_a_mask_multiplies_its_tasks_weights_only_and_round_trips(tmp_path):
    graph = _two_task_graph()
    x = torch.randn(4, 1, 6, 6)
    before = compile_view(graph, 0).module(x)
    weight = graph.node("dense").weights["1.0.weight"]
    mask = (torch.rand(weight.shape) > 0.5).float()
    graph.node("dense").masks[1] = {"1.0.weight": mask}
    seen = compile_view(graph, 1).node_modules["dense"].state_dict()["1.0.weight"]
    assert torch.equal(seen, weight * mask)
    assert torch.equal(compile_view(graph, 0).module(x), before)
    loaded = load_graph(save_graph(graph, tmp_path / "c"))
    assert torch.equal(loaded.node("dense").masks[1]["1.0.weight"], mask)
    graph.node("dense").masks[1] = {"1.0.weight": torch.ones(3, 3)}
    with pytest.raises(CheckpointError, match="task 1's mask of '1.0.weight' has shape \\(3, 3\\)"):
        load_graph(save_graph(graph, tmp_path / "bad"))


class _Doubling(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


def test_a_gate_being_learnt_on_a_frozen_node_keeps_it_out_of_the_frozen_prefix():
    graph = _two_task_graph()
    graph.node("conv").frozen = True
    assert "conv" not in compile_for_training(graph, 0).suffix_nodes  # computed once per task
    program = compile_for_training(graph, 0, gates={"conv": _Doubling(3)})
    assert "conv" in program.suffix_nodes
    trainable = [p for p in program.suffix.parameters() if p.requires_grad]
    assert any(p is program.full.gates["conv"].scale for p in trainable)
    assert not program.full.node_modules["conv"][0][0].weight.requires_grad


def _combined_graph() -> ModuleGraph:
    torch.manual_seed(0)
    graph = ModuleGraph((1, 6, 6))
    graph.add("base", Conv2d(1, 4, 3, padding=1, pool=2), [INPUT], 0, frozen=True)
    graph.add("t1/conv", Combination.over(graph.node("base").spec), [INPUT], 1, shares="base")
    graph.add("t1/head", Head(36, 2, flatten=True), ["t1/conv"], 1)
    graph.set_head(1, "t1/head")
    return graph


def test_a_combination_starts_as_its_base_layer_and_trains_only_its_own_weights(tmp_path):
    graph = _combined_graph()
    node = graph.node("t1/conv")
    assert set(node.weights) == {"combination", "bias"} and node.n_parameters == 16 + 4
    base = graph.node("base")
    node.weights["bias"] = base.weights["0.0.bias"].clone()  # identity A, the base's bias: the base layer
    x = torch.randn(5, 1, 6, 6)
    reference = base.spec.build()
    reference.load_state_dict(base.weights)
    torch.testing.assert_close(compile_view(graph, 1, output="t1/conv").module(x), reference(x))
    program = compile_for_training(graph, 1)
    trained = {id(p) for p in program.suffix.parameters() if p.requires_grad}
    module = program.full.node_modules["t1/conv"]
    assert trained >= {id(module.combination), id(module.bias)} and not module.base_weight.requires_grad
    loaded = load_graph(save_graph(graph, tmp_path / "c"))
    assert loaded.node("t1/conv").shares == "base"
    assert torch.equal(compile_view(loaded, 1).module(x), compile_view(graph, 1).module(x))


def test_a_combination_only_over_a_matching_frozen_layer():
    graph = _combined_graph()
    with pytest.raises(GraphError, match="matching spec"):
        graph.add("t2/x", Combination(1, 5, 3, padding=1, pool=2), [INPUT], 2, shares="base")
    with pytest.raises(GraphError, match="recombines a dense or conv layer"):
        Combination.over(Head(4, 2))


def test_a_methods_node_state_round_trips_and_must_be_finite(tmp_path):
    graph = _two_task_graph()
    graph.node("dense").state["importance/1.0.weight"] = torch.rand(5, 27)
    loaded = load_graph(save_graph(graph, tmp_path / "c"))
    assert torch.equal(
        loaded.node("dense").state["importance/1.0.weight"],
        graph.node("dense").state["importance/1.0.weight"],
    )
    graph.node("dense").state["anchor/x"] = torch.tensor([float("nan")])
    with pytest.raises(CheckpointError, match="state anchor/x holds NaN"):
        load_graph(save_graph(graph, tmp_path / "nan"))
