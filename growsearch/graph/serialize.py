"""Save and load a module graph: structure as readable JSON, weights as safetensors, and checksums.

A checkpoint folder holds `graph.json` (networkx node-link data of the specs; no pickles),
`weights.safetensors` (tensors keyed `node_id|param`, owner masks `node_id|param|owners`, a task's gate
`node_id|@gate|task`, a task's weight mask `node_id|@mask|task|param`, a method's per-node state
`node_id|@state|name`, a task's own normalisation `node_id|@norm|task|entry`) and `checksums.json` (sha256
of both, written last). Loading refuses a torn or
edited checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from growsearch.atomic_files import atomic_write_bytes, atomic_write_json, read_json, sha256_of
from growsearch.errors import CheckpointError, GrowsearchError
from growsearch.graph.module_graph import FREE, INPUT, MERGES, ModuleGraph, Node
from growsearch.graph.specs import Input, node_kind_class, spec_from_dict

GRAPH_FILE, WEIGHTS_FILE, CHECKSUM_FILE = "graph.json", "weights.safetensors", "checksums.json"
# 2: a node may share another's weights (`shares`); 3: per-task gates and masks; 4: a task's own
# normalisation. Older files load as they are (they hold none of these).
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
GATE, MASK, STATE, NORM = "@gate", "@mask", "@state", "@norm"


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
        for task, norm in node.norms.items():
            for name, value in norm.items():
                tensors[f"{node_id}|{NORM}|{task}|{name}"] = value.contiguous()
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
    expected = read_json(checksum_path)
    if not isinstance(expected, dict) or not all(isinstance(v, str) for v in expected.values()):
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
    data = read_json(folder / GRAPH_FILE)
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError) as error:
        raise CheckpointError(f"cannot read {folder / WEIGHTS_FILE}: {error}") from None
    try:
        return _graph_from_data(data, tensors)
    except GrowsearchError as error:  # about a tensor: named by the weights file, else by graph.json
        text = str(error)
        about = WEIGHTS_FILE if text.startswith(f"{WEIGHTS_FILE}: ") else GRAPH_FILE
        raise CheckpointError(f"{folder / about}: {text.removeprefix(f'{WEIGHTS_FILE}: ')}") from None
    except (KeyError, TypeError, ValueError, nx.NetworkXException) as error:
        raise CheckpointError(f"{folder / GRAPH_FILE} is not a growsearch graph: {error!r}") from None


_MAX_SIZE = 2**31 - 1  # a spec's sizes and the input's: what a tensor dimension may hold


def _check_node_link(data: Any) -> dict[str, dict[str, Any]]:
    """graph.json's fields, every one checked before anything is built from them: a checksum proves the file
    is whole, not that it is a graph. Returns the nodes' attributes by id."""
    if not isinstance(data, dict) or not isinstance(data.get("graph"), dict):
        raise CheckpointError("expected networkx node-link data with a 'graph' mapping")
    if data.get("directed") is not True or data.get("multigraph") is not False:
        raise CheckpointError("directed / multigraph: expected a directed graph without parallel edges")
    meta = data["graph"]
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"graph format_version {_shown(meta.get('format_version'))}; expected one of {READABLE_VERSIONS}"
        )
    shape = meta.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(_size(d, 1) for d in shape):
        raise CheckpointError(f"graph.input_shape: expected a list of sizes >= 1, got {_shown(shape)}")
    nodes, edges = data.get("nodes"), data.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise CheckpointError("expected lists 'nodes' and 'edges'")
    attrs: dict[str, dict[str, Any]] = {}
    for entry in nodes:
        node_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(node_id, str) or not node_id:
            raise CheckpointError(
                f"nodes: expected each node a mapping with a string 'id', got {_shown(entry)}"
            )
        if node_id in attrs:
            raise CheckpointError(f"node {node_id!r} is listed twice")
        attrs[node_id] = entry
    if INPUT not in attrs:
        raise CheckpointError(f"the graph has no {INPUT!r} node; every graph starts at it")
    for node_id, entry in attrs.items():
        if node_id != INPUT:
            _check_node(node_id, entry, attrs)
    inputs = {(i, n) for n, e in attrs.items() if n != INPUT for i in e["inputs"]}
    listed = set()
    for edge in edges:
        pair = (edge.get("source"), edge.get("target")) if isinstance(edge, dict) else None
        if pair is None or pair not in inputs:
            raise CheckpointError(f"edges: {_shown(edge)} is not one of the nodes' inputs")
        listed.add(pair)
    if listed != inputs:
        missing = sorted(inputs - listed)[0]
        raise CheckpointError(
            f"edges: {missing[0]!r} -> {missing[1]!r} (an input of {missing[1]!r}) is missing"
        )
    order = nx.DiGraph(list(inputs))  # a sharing node is built after the node it shares
    order.add_nodes_from(attrs)
    order.add_edges_from((e["shares"], n) for n, e in attrs.items() if n != INPUT and e.get("shares"))
    try:
        cycle = nx.find_cycle(order)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        path = " -> ".join([cycle[0][0], *(v for _, v in cycle)])
        raise CheckpointError(f"the nodes' inputs form a cycle ({path}); a graph has none")
    heads = meta.get("heads")
    if not isinstance(heads, dict):
        raise CheckpointError(f"graph.heads: expected a mapping of tasks to head nodes, got {_shown(heads)}")
    for task, head in heads.items():
        if not task.isdigit() or head not in attrs or head == INPUT:
            raise CheckpointError(f"graph.heads: task {task!r} -> {_shown(head)}; expected a task and a node")
    return attrs


def _check_node(node_id: str, entry: dict[str, Any], attrs: dict[str, dict[str, Any]]) -> None:
    """A node's fields: their types, and the nodes they name exist."""
    if "|" in node_id:
        raise CheckpointError(f"node id {node_id!r} contains '|'")
    checks = {
        "spec": (
            lambda v: isinstance(v, dict) and isinstance(v.get("kind"), str),
            "a spec mapping with a kind",
        ),
        "owner": (lambda v: _int(v) and v >= FREE, f"a task number (or {FREE}: no task)"),
        "inputs": (
            lambda v: isinstance(v, list) and v and all(isinstance(i, str) and i in attrs for i in v),
            "a non-empty list of the graph's node ids",
        ),
        "frozen": (lambda v: isinstance(v, bool), "true or false"),
        "merge": (lambda v: v is None or v in MERGES, f"null or one of {', '.join(MERGES)}"),
        "layer": (lambda v: v is None or _size(v, 0), "null or a layer index >= 0"),
    }
    for name, (check, expected) in checks.items():
        if name not in entry or not check(entry[name]):
            raise CheckpointError(
                f"node {node_id!r}: {name}: expected {expected}, got {_shown(entry.get(name))}"
            )
    if node_id in entry["inputs"]:
        raise CheckpointError(f"node {node_id!r} reads itself (a self-loop); a graph has none")
    shares = entry.get("shares")
    if shares is not None and (not isinstance(shares, str) or shares not in attrs or shares == node_id):
        raise CheckpointError(
            f"node {node_id!r}: shares: expected null or another node's id, got {_shown(shares)}"
        )
    if entry["spec"]["kind"] == Input.kind:
        raise CheckpointError(f"node {node_id!r} is a second Input")
    _check_spec_fields(node_id, entry["spec"])


def _check_spec_fields(node_id: str, spec: dict[str, Any]) -> None:
    """Each spec field has its dataclass's type; sizes are >= 0 (unless the field's default is below zero)
    and fit a tensor; numbers are finite."""
    cls = node_kind_class(spec["kind"])
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name not in spec:
            continue
        value = spec[field.name]
        default = field.default if isinstance(field.default, int) else 0
        if not _fits(value, hints.get(field.name, Any), -1 if default < 0 else 0):
            raise CheckpointError(
                f"node {node_id!r}: spec.{field.name}: expected {_kind_name(hints.get(field.name))}"
                f"{' >= 0' if _counts(hints.get(field.name)) else ''}, got {_shown(value)}"
            )


def _fits(value: Any, hint: Any, low: int) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option, low) for option in typing.get_args(hint))
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0], low) for v in value)
        return len(value) == len(args) and all(_fits(v, a, low) for v, a in zip(value, args, strict=True))
    if hint is int:
        return _int(value) and low <= value <= _MAX_SIZE
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is type(None):
        return value is None
    return True  # a type of a method's own: its spec checks it


def _counts(hint: Any) -> bool:
    return hint is int or int in typing.get_args(hint)


def _kind_name(hint: Any) -> str:
    return {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}.get(
        hint, str(hint).replace("typing.", "")
    )


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _size(value: Any, low: int) -> bool:
    return _int(value) and low <= value <= _MAX_SIZE


def _shown(value: Any) -> str:
    text = repr(value) if not _int(value) or abs(value) < 10**30 else "a very large integer"
    return text if len(text) <= 80 else text[:77] + "..."


def _graph_from_data(data: dict, tensors: dict) -> ModuleGraph:
    attrs = _check_node_link(data)
    meta = data["graph"]
    graph = ModuleGraph(tuple(meta["input_shape"]))
    order = nx.DiGraph()  # a sharing node is added after the node it shares
    order.add_nodes_from(attrs)
    order.add_edges_from((i, n) for n, a in attrs.items() if n != INPUT for i in a["inputs"])
    order.add_edges_from((a["shares"], n) for n, a in attrs.items() if n != INPUT and a.get("shares"))
    per_node: dict[str, dict[str, object]] = {}
    for key, value in tensors.items():
        node_id, _, name = key.partition("|")
        if node_id not in attrs or node_id == INPUT:
            raise CheckpointError(f"{WEIGHTS_FILE}: {key!r} is a tensor of no node of the graph")
        per_node.setdefault(node_id, {})[name] = value
    for node_id in nx.lexicographical_topological_sort(order):
        if node_id == INPUT:
            continue
        attrs_of = attrs[node_id]
        spec = spec_from_dict(attrs_of["spec"])
        with torch.device("meta"):  # shapes and dtypes only: no initialisation, no random draw
            try:
                built = spec.build().state_dict()
            except Exception as error:  # noqa: BLE001 - whatever a spec's module refuses, named
                raise CheckpointError(
                    f"node {node_id!r}: its spec {_shown(attrs_of['spec'])} builds no module ({error})"
                ) from None
        node: Node = graph.add(
            node_id,
            spec,
            attrs_of["inputs"],
            attrs_of["owner"],
            merge=attrs_of["merge"],
            layer=attrs_of["layer"],
            frozen=attrs_of["frozen"],
            weights={},
            shares=attrs_of.get("shares"),
        )
        for name, value in per_node.get(node_id, {}).items():
            if name.startswith(GATE + "|"):
                node.gates[int(name.split("|")[1])] = value
            elif name.startswith(STATE + "|"):
                node.state[name.split("|", 1)[1]] = value
            elif name.startswith(MASK + "|"):
                _, task, param = name.split("|", 2)
                node.masks.setdefault(int(task), {})[param] = value
            elif name.startswith(NORM + "|"):
                _, task, entry = name.split("|", 2)
                node.norms.setdefault(int(task), {})[entry] = value
            elif name.endswith("|owners"):
                node.owners[name.removesuffix("|owners")] = value
            else:
                node.weights[name] = value
        expected = {k: tuple(v.shape) for k, v in built.items()}
        if node.shares and not spec.combines_shared:
            expected = {}  # it computes with the weights of the node it shares
        found = {k: tuple(v.shape) for k, v in node.weights.items()}
        if found != expected:
            raise CheckpointError(
                f"{WEIGHTS_FILE}: the weights of node {node_id!r} are {found}; its spec expects {expected}"
            )
        for name, value in node.weights.items():  # a checksum recomputed after a cast proves nothing
            if value.dtype != built[name].dtype:
                raise CheckpointError(
                    f"{WEIGHTS_FILE}: node {node_id!r}: weight {name!r} is {_dtype(value)}; its spec expects "
                    f"{_dtype(built[name])}"
                )
        _check_per_task(node_id, node)
        for task, norm in node.norms.items():  # a task's own normalisation: the entries the spec's has
            for name, value in norm.items():
                if name not in built or value.shape != built[name].shape or value.dtype != built[name].dtype:
                    raise CheckpointError(
                        f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s normalisation entry {name!r} "
                        f"({_dtype(value)} {tuple(value.shape)}) is none its spec has"
                    )
        tensors_of_node = [
            *node.weights.items(),
            *((f"task {t}'s gate", g) for t, g in node.gates.items()),
            *((f"state {k}", v) for k, v in node.state.items()),
            *((f"task {t}'s {k}", v) for t, norm in node.norms.items() for k, v in norm.items()),
        ]
        for name, value in tensors_of_node:  # checksums prove the bytes, not that they are weights
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(
                    f"{WEIGHTS_FILE}: node {node_id!r}: {name} holds NaN or infinite values, not weights"
                )
    for task, head in meta["heads"].items():
        graph.set_head(int(task), head)
    graph.shapes()  # every node reads what its inputs give (a GraphError names the first that does not)
    return graph


def _dtype(value: torch.Tensor) -> str:
    return str(value.dtype).removeprefix("torch.")


_INTEGERS = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _check_per_task(node_id: str, node: Node) -> None:
    """Owner tensors are integer tensors of their parameter's shape; gates are vectors of numbers or
    booleans; a task's mask has its parameter's shape and names a parameter the node has."""
    for name, owners in node.owners.items():
        if (
            name not in node.weights
            or owners.shape != node.weights[name].shape
            or owners.dtype not in _INTEGERS
        ):
            raise CheckpointError(
                f"{WEIGHTS_FILE}: node {node_id!r}: the owners of {name!r} are {_dtype(owners)} of shape "
                f"{tuple(owners.shape)}; expected task numbers (integers) of the parameter's shape"
            )
    for task, gate in node.gates.items():
        if gate.dim() != 1:
            raise CheckpointError(
                f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s gate has shape {tuple(gate.shape)}"
            )
        if not (gate.is_floating_point() or gate.dtype == torch.bool) or gate.dtype == torch.float16:
            raise CheckpointError(
                f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s gate is {_dtype(gate)}; expected numbers"
            )
    own = node.weights if not node.shares or node.spec.combines_shared else None
    for task, masks in node.masks.items():
        for name, mask in masks.items():
            if own is not None and (name not in own or own[name].shape != mask.shape):
                raise CheckpointError(
                    f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s mask of {name!r} has shape "
                    f"{tuple(mask.shape)}; "
                    f"the node's parameters are { {k: tuple(v.shape) for k, v in own.items()} }"
                )
            if not (mask.is_floating_point() or mask.dtype == torch.bool) or mask.dtype == torch.float16:
                raise CheckpointError(
                    f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s mask of {name!r} is {_dtype(mask)}; "
                    "expected numbers"
                )
