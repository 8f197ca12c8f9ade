"""Save and load a module graph: structure as readable JSON, weights as safetensors, and checksums.

A checkpoint folder holds `graph.json` (networkx node-link data of the specs; no pickles),
`weights.safetensors` (tensors keyed `node_id|param`, owner masks `node_id|param|owners`, a task's gate
`node_id|@gate|task`, a task's weight mask `node_id|@mask|task|param`, a method's per-node state
`node_id|@state|name`) and `checksums.json` (sha256 of both, written last). Loading refuses a torn or
edited checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from growsearch.atomic_files import atomic_write_bytes, atomic_write_json, sha256_of
from growsearch.errors import CheckpointError, GrowsearchError
from growsearch.graph.module_graph import INPUT, ModuleGraph, Node
from growsearch.graph.specs import Input, spec_from_dict

GRAPH_FILE, WEIGHTS_FILE, CHECKSUM_FILE = "graph.json", "weights.safetensors", "checksums.json"
# 2: a node may share another's weights (`shares`); 3: per-task gates and masks. Older files load as
# they are (they hold neither).
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
GATE, MASK, STATE = "@gate", "@mask", "@state"


def graph_to_json(graph: ModuleGraph) -> dict:
    """The graph as node-link data a person (or networkx, or Gephi) can read."""
    plain = nx.DiGraph()
    for node_id, node in graph.nodes():
        plain.add_node(
            node_id,
            spec=node.spec.to_dict(),
            owner=node.owner,
            inputs=list(node.inputs),
            frozen=node.frozen,
            merge=node.merge,
            layer=node.layer,
            parameters=node.n_parameters,
            owner_tracked=sorted(node.owners),
            shares=node.shares,
            gated_tasks=sorted(node.gates),
            masked_tasks=sorted(node.masks),
            state=sorted(node.state),
        )
    plain.add_edges_from(graph.edges())
    data = nx.node_link_data(plain, edges="edges")
    data["graph"] = {
        "format_version": FORMAT_VERSION,
        "input_shape": list(graph.input_shape),
        "heads": {str(t): h for t, h in sorted(graph.heads.items())},
    }
    return data


def save_graph(
    graph: ModuleGraph,
    folder: Path,
    extra_json: dict[str, object] | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write the checkpoint; `extra_json` files (e.g. a task's record) and `extra_tensors` safetensors files
    (a task's gate) join it under the same checksums."""
    folder = Path(folder)
    extra_json = extra_json or {}
    extra_tensors = extra_tensors or {}
    tensors = {}
    for node_id, node in graph.nodes():
        for name, value in node.weights.items():
            tensors[f"{node_id}|{name}"] = value.contiguous()
        for name, value in node.owners.items():
            tensors[f"{node_id}|{name}|owners"] = value.contiguous()
        for task, value in node.gates.items():
            tensors[f"{node_id}|{GATE}|{task}"] = value.contiguous()
        for task, masks in node.masks.items():
            for name, value in masks.items():
                tensors[f"{node_id}|{MASK}|{task}|{name}"] = value.contiguous()
        for name, value in node.state.items():
            tensors[f"{node_id}|{STATE}|{name}"] = value.contiguous()
    atomic_write_json(folder / GRAPH_FILE, graph_to_json(graph))
    atomic_write_bytes(folder / WEIGHTS_FILE, save(tensors))
    for name, data in extra_json.items():
        atomic_write_json(folder / name, data)
    for name, named in extra_tensors.items():
        atomic_write_bytes(folder / name, save({k: v.contiguous() for k, v in named.items()}))
    files = (GRAPH_FILE, WEIGHTS_FILE, *extra_json, *extra_tensors)
    checksums = {name: sha256_of(folder / name) for name in files}
    atomic_write_json(folder / CHECKSUM_FILE, checksums)
    return folder


def verify_checksums(folder: Path, extra: tuple[str, ...] = ()) -> None:
    folder = Path(folder)
    checksum_path = folder / CHECKSUM_FILE
    if not checksum_path.is_file():
        raise CheckpointError(f"{checksum_path} is missing: the checkpoint in {folder} was not written whole")
    try:
        expected = json.loads(checksum_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{checksum_path} is not valid JSON ({error}); the checkpoint is torn"
        ) from error
    if not isinstance(expected, dict):
        raise CheckpointError(f"{checksum_path}: expected a mapping of file names to sha256 digests")
    for name in (GRAPH_FILE, WEIGHTS_FILE, *extra):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing from the checkpoint")
        if sha256_of(path) != expected.get(name):
            raise CheckpointError(
                f"{path} does not match its checksum in {CHECKSUM_FILE}: the file is torn or was edited"
            )


def load_graph(folder: Path, *, verify: bool = True) -> ModuleGraph:
    folder = Path(folder)
    if verify:
        verify_checksums(folder)
    try:
        data = json.loads((folder / GRAPH_FILE).read_text())
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, json.JSONDecodeError, SafetensorError) as error:
        raise CheckpointError(f"cannot read the checkpoint in {folder}: {error}") from error
    try:
        return _graph_from_data(data, tensors)
    except GrowsearchError as error:
        raise CheckpointError(f"{folder / GRAPH_FILE}: {error}") from error
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{folder / GRAPH_FILE} is not a growsearch graph: {error!r}") from error


def _graph_from_data(data: dict, tensors: dict) -> ModuleGraph:
    meta = data["graph"]
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"graph format_version {meta.get('format_version')!r}; expected one of {READABLE_VERSIONS}"
        )
    graph = ModuleGraph(tuple(meta["input_shape"]))
    plain = nx.node_link_graph(data, edges="edges")
    order = plain.copy()  # a sharing node is added after the node it shares
    order.add_edges_from((a["shares"], n) for n, a in plain.nodes(data=True) if a.get("shares"))
    per_node: dict[str, dict[str, object]] = {}
    for key, value in tensors.items():
        node_id, _, name = key.partition("|")
        per_node.setdefault(node_id, {})[name] = value
    for node_id in nx.lexicographical_topological_sort(order):
        if node_id == INPUT:
            continue
        attrs = plain.nodes[node_id]
        spec = spec_from_dict(attrs["spec"])
        if isinstance(spec, Input):
            raise CheckpointError(f"node {node_id!r} is a second Input")
        node: Node = graph.add(
            node_id,
            spec,
            attrs["inputs"],
            attrs["owner"],
            merge=attrs["merge"],
            layer=attrs["layer"],
            frozen=attrs["frozen"],
            weights={},
            shares=attrs.get("shares"),
        )
        for name, value in per_node.get(node_id, {}).items():
            if name.startswith(GATE + "|"):
                node.gates[int(name.split("|")[1])] = value
            elif name.startswith(STATE + "|"):
                node.state[name.split("|", 1)[1]] = value
            elif name.startswith(MASK + "|"):
                _, task, param = name.split("|", 2)
                node.masks.setdefault(int(task), {})[param] = value
            elif name.endswith("|owners"):
                node.owners[name.removesuffix("|owners")] = value
            else:
                node.weights[name] = value
        with torch.device("meta"):  # shapes only: no initialisation, no draw from the global random stream
            expected = {k: tuple(v.shape) for k, v in spec.build().state_dict().items()}
        if node.shares and not spec.combines_shared:
            expected = {}  # it computes with the weights of the node it shares
        found = {k: tuple(v.shape) for k, v in node.weights.items()}
        if found != expected:
            raise CheckpointError(f"weights of node {node_id!r} are {found}; its spec expects {expected}")
        _check_per_task(node_id, node)
        tensors_of_node = [
            *node.weights.items(),
            *((f"task {t}'s gate", g) for t, g in node.gates.items()),
            *((f"state {k}", v) for k, v in node.state.items()),
        ]
        for name, value in tensors_of_node:  # checksums prove the bytes, not that they are weights
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"node {node_id!r}: {name} holds NaN or infinite values, not weights")
    for task, head in meta["heads"].items():
        graph.set_head(int(task), head)
    return graph


def _check_per_task(node_id: str, node: Node) -> None:
    """Gates are vectors; a task's mask has its parameter's shape and names a parameter the node has."""
    for task, gate in node.gates.items():
        if gate.dim() != 1:
            raise CheckpointError(f"node {node_id!r}: task {task}'s gate has shape {tuple(gate.shape)}")
    own = node.weights if not node.shares or node.spec.combines_shared else None
    for task, masks in node.masks.items():
        for name, mask in masks.items():
            if own is not None and (name not in own or own[name].shape != mask.shape):
                raise CheckpointError(
                    f"node {node_id!r}: task {task}'s mask of {name!r} has shape {tuple(mask.shape)}; "
                    f"the node's parameters are { {k: tuple(v.shape) for k, v in own.items()} }"
                )
