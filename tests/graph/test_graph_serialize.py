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


# ---- content a checksum cannot vouch for: the file is whole, and it lies -------------------------------
def _rewrite(folder, graph_json=None, tensors=None) -> None:
    """Change graph.json (a function of its data) or the weights, and write checksums that match."""
    from safetensors.torch import load_file, save_file

    from growsearch.atomic_files import sha256_of

    if graph_json is not None:
        data = json.loads((folder / "graph.json").read_text())
        graph_json(data)
        (folder / "graph.json").write_text(json.dumps(data))
    if tensors is not None:
        loaded = load_file(folder / "weights.safetensors")
        save_file(tensors(loaded), folder / "weights.safetensors")
    names = json.loads((folder / "checksums.json").read_text())
    (folder / "checksums.json").write_text(json.dumps({n: sha256_of(folder / n) for n in names}))


def _node(data, node_id):
    return next(n for n in data["nodes"] if n["id"] == node_id)


def _cycle(data):
    _node(data, "t0/L0")["inputs"] = ["t0/head"]
    data["edges"] = [e for e in data["edges"] if e["target"] != "t0/L0"]
    data["edges"].append({"source": "t0/head", "target": "t0/L0"})


def _self_loop(data):
    _node(data, "t0/L1")["inputs"].append("t0/L1")
    data["edges"].append({"source": "t0/L1", "target": "t0/L1"})


def _no_input(data):
    data["nodes"] = [n for n in data["nodes"] if n["id"] != "input"]
    data["edges"] = [e for e in data["edges"] if e["source"] != "input"]


def _set(node_id, *path_and_value):
    *path, value = path_and_value

    def change(data):
        target = _node(data, node_id)
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_cycle, "the nodes' inputs form a cycle"),
        (_self_loop, "node 't0/L1' reads itself (a self-loop)"),
        (_no_input, "the graph has no 'input' node"),
        (
            _set("t0/L1", "spec", "out_features", -8),
            "node 't0/L1': spec.out_features: expected an integer >= 0",
        ),
        (_set("t0/L1", "spec", "out_features", 2**70), "spec.out_features: expected an integer"),
        (_set("t0/L1", "owner", "zero"), "node 't0/L1': owner: expected a task number"),
        (_set("t0/L1", "frozen", "yes"), "node 't0/L1': frozen: expected true or false"),
        (
            _set("t0/L1", "inputs", ["nowhere"]),
            "node 't0/L1': inputs: expected a non-empty list of the graph's",
        ),
        (_set("t0/L1", "spec", "kind", "Nosuch"), "unknown node kind 'Nosuch'"),
        (_set("t0/L1", "spec", "activation", 3), "spec.activation"),
        (lambda d: d["graph"].update(heads={"0": "nowhere"}), "graph.heads: task '0' -> 'nowhere'"),
        (lambda d: d["graph"].update(input_shape=[1, -8, 8]), "graph.input_shape: expected a list of sizes"),
        (lambda d: d.update(multigraph=True), "expected a directed graph without parallel edges"),
        (lambda d: d["edges"].pop(), "is missing"),
        (lambda d: d["nodes"].append(dict(_node(d, "t0/L1"))), "node 't0/L1' is listed twice"),
    ],
)
def test_a_graph_json_that_lies_is_refused_naming_node_and_field(tmp_path, change, message):
    save_graph(grown_graph(), tmp_path)
    _rewrite(tmp_path, graph_json=change)
    with pytest.raises(CheckpointError) as caught:
        load_graph(tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "graph.json")) and message in str(caught.value)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float16, torch.bool, torch.float64])
def test_weights_of_the_wrong_dtype_are_refused(tmp_path, dtype):
    save_graph(grown_graph(), tmp_path)
    _rewrite(
        tmp_path, tensors=lambda t: {k: v.to(dtype) if v.is_floating_point() else v for k, v in t.items()}
    )
    with pytest.raises(
        CheckpointError, match=f"is {str(dtype).removeprefix('torch.')}; its spec expects float32"
    ):
        load_graph(tmp_path)


def test_owners_that_are_not_task_numbers_are_refused(tmp_path):
    save_graph(grown_graph(), tmp_path)
    _rewrite(tmp_path, tensors=lambda t: {k: v.float() if k.endswith("|owners") else v for k, v in t.items()})
    with pytest.raises(CheckpointError, match="the owners of .* are float32 .*expected task numbers"):
        load_graph(tmp_path)


def test_a_tensor_of_no_node_is_refused(tmp_path):
    save_graph(grown_graph(), tmp_path)
    _rewrite(tmp_path, tensors=lambda t: {**t, "ghost|weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="weights.safetensors: 'ghost.weight' is a tensor of no node"):
        load_graph(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "checksums.json is nested too deep"),
        ('{"graph.json": NaN}', "checksums.json is not valid JSON (NaN is not a number"),
        ('{"graph.json": 3}', "checksums.json: expected a mapping of file names to sha256 digests"),
        ("\xff\xfe", "checksums.json is not text"),
    ],
)
def test_a_checksums_file_that_is_no_mapping_is_one_error(tmp_path, text, message):
    save_graph(grown_graph(), tmp_path)
    (tmp_path / "checksums.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        load_graph(tmp_path)


def test_a_deep_graph_json_is_one_error(tmp_path):
    save_graph(grown_graph(), tmp_path)
    (tmp_path / "graph.json").write_text("[" * 100_000 + "]" * 100_000)
    names = json.loads((tmp_path / "checksums.json").read_text())
    from growsearch.atomic_files import sha256_of

    (tmp_path / "checksums.json").write_text(json.dumps({n: sha256_of(tmp_path / n) for n in names}))
    with pytest.raises(CheckpointError, match="graph.json is nested too deep"):
        load_graph(tmp_path)
