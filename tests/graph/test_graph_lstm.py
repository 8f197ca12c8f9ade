"""The LSTM node kind: an LSTM's function, its shapes and multiply-adds, a readable JSON spec, sequences
concatenated step by step, and GIM columns grown from `{lstm: N}` layers."""

import json

import pytest
import torch
from torch import nn

from growsearch.config.network import parse_layers
from growsearch.errors import ConfigError, GraphError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.serialize import load_graph, save_graph
from growsearch.graph.specs import LSTM, Head, LastStep, spec_from_dict
from growsearch.grow import operators as ops
from growsearch.grow.backbone import layer_specs


def gim_columns(n_tasks: int = 3) -> ModuleGraph:
    specs = layer_specs(parse_layers([{"lstm": 6}, {"lstm": 5}], "t"), (8, 4))
    graph = ModuleGraph((8, 4))
    for task in range(n_tasks):
        graph = ops.add_column(graph, task, specs, 2)
        graph = ops.freeze(graph, [n for n, node in graph.nodes() if node.owner == task])
    return graph


def test_the_node_computes_torchs_lstm_from_zero_states():
    spec = LSTM(4, 6, return_sequence=True)
    ours = spec.build()
    reference = nn.LSTM(4, 6, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(ours.weight_ih)
        reference.weight_hh_l0.copy_(ours.weight_hh)
        reference.bias_ih_l0.copy_(ours.bias)
        reference.bias_hh_l0.zero_()
    x = torch.rand(3, 7, 4)
    expected, (h_last, _) = reference(x)
    assert torch.allclose(ours(x), expected, atol=1e-6)
    last = LSTM(4, 6, return_sequence=False).build()
    last.load_state_dict(ours.state_dict())
    assert torch.allclose(last(x), h_last[0], atol=1e-6)


def test_shapes_multiply_adds_and_json_round_trip():
    seq, last = LSTM(8, 16, return_sequence=True), LSTM(8, 16)
    assert seq.output_shape((28, 8)) == (28, 16) and last.output_shape((28, 8)) == (16,)
    assert seq.macs((28, 8)) == last.macs((28, 8)) == 28 * 4 * 16 * (8 + 16)
    assert LastStep().output_shape((28, 16)) == (16,)
    data = json.loads(json.dumps(seq.to_dict()))
    assert data == {"kind": "LSTM", "input_size": 8, "hidden_size": 16, "return_sequence": True}
    assert spec_from_dict(data) == seq and spec_from_dict(LastStep().to_dict()) == LastStep()
    with pytest.raises(
        GraphError, match=r"LSTM expects a \(steps, features=8\) sequence, got shape \(1, 8, 8\)"
    ):
        last.output_shape((1, 8, 8))
    with pytest.raises(GraphError, match="LastStep expects a"):
        LastStep().output_shape((16,))


def test_concatenated_sequences_join_their_features_at_every_step():
    graph = ModuleGraph((5, 3))
    graph.add("a", LSTM(3, 4, return_sequence=True), [INPUT], 0)
    graph.add("b", LSTM(7, 2), [INPUT, "a"], 0, merge="concat")
    graph.add("head", Head(2, 2), ["b"], 0)
    graph.set_head(0, "head")
    assert graph.shapes()["b"] == (2,)
    x = torch.rand(4, 5, 3)
    module = compile_view(graph, 0).module
    a = module.a(x)
    assert torch.equal(module(x), module.head(module.b(torch.cat([x, a], dim=2))))
    with pytest.raises(GraphError, match="concatenates inputs of mismatched shapes"):
        graph.add("c", LSTM(4, 2), [INPUT, "b"], 0, merge="concat")


def test_yaml_layers_declare_recurrent_layers_and_refuse_image_inputs():
    layers = parse_layers([{"lstm": 6}, {"lstm": {"width": 5}}, {"linear": 3}], "f.yaml: network.layers")
    assert [layer.to_dict() for layer in layers][:2] == [{"lstm": {"width": 6}}, {"lstm": {"width": 5}}]
    assert parse_layers([layer.to_dict() for layer in layers], "again") == layers
    specs = layer_specs(layers, (8, 4))
    assert specs[:2] == [LSTM(4, 6, return_sequence=True), LSTM(6, 5, return_sequence=False)]
    with pytest.raises(ConfigError, match=r"\[0\]\.lstm: unknown keys \['kernel'\]"):
        parse_layers([{"lstm": {"width": 4, "kernel": 3}}], "f.yaml: network.layers")
    with pytest.raises(
        ConfigError, match=r"layer 0 \(lstm\) needs a \(steps, features\) sequence.*seq-split-digits"
    ):
        layer_specs(parse_layers([{"lstm": 4}], "f"), (1, 8, 8))


def test_gim_columns_read_older_columns_sequences_at_every_layer():
    graph = gim_columns()
    assert graph.node("t2/L0").inputs == ("input", "t0/L0", "t1/L0")
    assert graph.node("t2/L0").spec == LSTM(4 + 6 + 6, 6, return_sequence=True)
    assert graph.node("t2/L1.seq").inputs == ("t2/L0", "t0/L1.seq", "t1/L1.seq")
    assert graph.node("t2/L1").spec == LastStep() and graph.node("t2/head").inputs == ("t2/L1",)
    assert graph.layer_nodes(2) == {0: "t2/L0", 1: "t2/L1"}
    assert not any("lateral" in n for n in graph.node_ids())  # the LSTMs' input weights are the laterals
    assert graph.macs(["t0/L0"]) == 8 * 4 * 6 * (4 + 6)


def test_gim_columns_save_and_load_with_the_same_outputs(tmp_path):
    graph = gim_columns()
    save_graph(graph, tmp_path / "ckpt")
    loaded = load_graph(tmp_path / "ckpt")
    x = torch.rand(3, 8, 4)
    for task in range(3):
        assert torch.equal(compile_view(loaded, task).module(x), compile_view(graph, task).module(x))


def test_the_layer_vectorises_over_a_pack_of_weights():
    module = LSTM(4, 6).build()
    weights = [LSTM(4, 6).build().state_dict() for _ in range(3)]
    stacked = {name: torch.stack([w[name] for w in weights]) for name in weights[0]}
    x = torch.rand(5, 7, 4)
    packed = torch.func.vmap(lambda p: torch.func.functional_call(module, p, (x,)))(stacked)
    for k, w in enumerate(weights):
        assert torch.allclose(packed[k], torch.func.functional_call(module, w, (x,)), atol=1e-6)
