import json

import pytest
import torch

from growsearch.config.network import parse_layers
from growsearch.errors import CheckpointError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.graph.serialize import load_graph, save_graph
from growsearch.grow import operators as ops
from growsearch.grow.backbone import layer_specs


def grown_graph() -> ModuleGraph:
    specs = layer_specs(parse_layers([{"conv": {"channels": 4, "pool": 2}}, {"linear": 8}], "t"), (1, 8, 8))
    graph = ModuleGraph((1, 8, 8))
    for task in range(3):
        graph = ops.add_column(graph, task, specs, 2)
        graph = ops.freeze(graph, [n for n, node in graph.nodes() if node.owner == task])
    return ops.track_owners(graph, ["t2/L1.pre"])


def test_round_trip_keeps_structure_weights_and_outputs(tmp_path):
    graph = grown_graph()
    save_graph(graph, tmp_path / "ckpt")
    loaded = load_graph(tmp_path / "ckpt")
    assert list(loaded) == list(graph)
    assert loaded.heads == graph.heads
    assert loaded.node("t2/L1.pre").owners.keys() == graph.node("t2/L1.pre").owners.keys()
    x = torch.rand(4, 1, 8, 8)
    for task in range(3):
        assert torch.equal(compile_view(loaded, task).module(x), compile_view(graph, task).module(x))


def test_graph_json_is_readable_node_link_data(tmp_path):
    save_graph(grown_graph(), tmp_path)
    data = json.loads((tmp_path / "graph.json").read_text())
    node = next(n for n in data["nodes"] if n["id"] == "t1/lateral1")
    assert node["spec"]["kind"] == "Adapter" and node["owner"] == 1 and node["frozen"] is True
    assert {"source": "t0/L0", "target": "t1/lateral1"} in data["edges"]
    assert data["graph"]["heads"] == {"0": "t0/head", "1": "t1/head", "2": "t2/head"}


def test_a_torn_weights_file_is_refused(tmp_path):
    save_graph(grown_graph(), tmp_path)
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="weights.safetensors does not match its checksum"):
        load_graph(tmp_path)


def test_an_edited_graph_is_refused(tmp_path):
    save_graph(grown_graph(), tmp_path)
    path = tmp_path / "graph.json"
    path.write_text(path.read_text().replace('"frozen": true', '"frozen": false', 1))
    with pytest.raises(CheckpointError, match="graph.json does not match"):
        load_graph(tmp_path)


def test_a_checkpoint_without_checksums_is_refused(tmp_path):
    save_graph(grown_graph(), tmp_path)
    (tmp_path / "checksums.json").unlink()
    with pytest.raises(CheckpointError, match="checksums.json is missing"):
        load_graph(tmp_path)


def test_weights_of_the_wrong_shape_are_refused_even_with_valid_checksums(tmp_path):
    graph = grown_graph()
    graph.node("t0/L1").weights["0.weight"] = torch.zeros(3, 3)
    save_graph(graph, tmp_path)
    with pytest.raises(CheckpointError, match="t0/L1"):
        load_graph(tmp_path)
