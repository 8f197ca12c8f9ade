"""A checkpoint folder read back and checked, with torch (`serialize.load_graph`) or without (`read_graph`).

A checkpoint folder holds `graph.json` (networkx node-link data of the specs; no pickles),
`weights.safetensors` (tensors keyed `node_id|param`, owner masks `node_id|param|owners`, a task's gate
`node_id|@gate|task`, a task's weight mask `node_id|@mask|task|param`, a method's per-node state
`node_id|@state|name`, a task's own normalisation `node_id|@norm|task|entry`) and `checksums.json` (sha256
of both, written last). Reading refuses a torn or edited checkpoint, and one whose files pass their
checksums but lie: `graph_from_checkpoint` checks graph.json (`node_link_checks`) and every tensor against
its node's spec (`NodeSpec.state_layout`) through shapes and dtype names alone, so both readers refuse the
same files with the same words. `read_graph` needs neither torch nor a module built: `growsearch inspect`
starts in well under a second.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import networkx as nx

from growsearch.atomic_files import read_json, sha256_of
from growsearch.errors import CheckpointError, GrowsearchError
from growsearch.graph.module_graph import INPUT, ModuleGraph, Node
from growsearch.graph.node_link_checks import check_node_link, shown
from growsearch.graph.specs import StateLayout, spec_from_dict

GRAPH_FILE, WEIGHTS_FILE, CHECKSUM_FILE = "graph.json", "weights.safetensors", "checksums.json"
GATE, MASK, STATE, NORM = "@gate", "@mask", "@state", "@norm"
INTEGERS = ("int8", "int16", "int32", "int64", "uint8")  # what owner tensors may hold: task numbers


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


def read_graph(folder: Path, *, verify: bool = True) -> ModuleGraph:
    """The checkpoint in `folder`, checked as `serialize.load_graph` checks it, without torch: its tensors
    are numpy arrays. A graph to describe (inspect, report), never to compile or train."""
    import numpy as np
    from safetensors.numpy import load_file

    # TypeError: a dtype numpy lacks (bfloat16)
    return read_checkpoint(folder, verify, load_file, lambda v: bool(np.isfinite(v).all()), (TypeError,))


def read_checkpoint(
    folder: Path,
    verify: bool,
    load_file: Callable[[str], Mapping[str, Any]],
    finite: Callable[[Any], bool],
    load_errors: tuple[type[Exception], ...] = (),
) -> ModuleGraph:
    """A checkpoint read with a safetensors front end (`load_file`: torch's or numpy's) and checked whole:
    its checksums (where `verify`), its graph.json, and every tensor against its node (`finite` says a
    tensor holds no NaN or infinity)."""
    from safetensors import SafetensorError

    folder = Path(folder)
    if verify:
        verify_checksums(folder)
    data = read_json(folder / GRAPH_FILE)
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except (OSError, SafetensorError, *load_errors) as error:
        raise CheckpointError(f"cannot read {folder / WEIGHTS_FILE}: {error}") from None
    return graph_from_checkpoint(folder, data, tensors, finite)


def graph_from_checkpoint(
    folder: Path, data: Any, tensors: Mapping[str, Any], finite: Callable[[Any], bool]
) -> ModuleGraph:
    """The graph of graph.json's `data` holding `tensors` (torch tensors or numpy arrays: read only through
    their shapes and dtypes, and `finite`, whether a floating tensor holds no NaN or infinity), every field
    and tensor checked; an error names the file that lies."""
    try:
        return _graph_from_data(data, tensors, finite)
    except GrowsearchError as error:  # about a tensor: named by the weights file, else by graph.json
        text = str(error)
        about = WEIGHTS_FILE if text.startswith(f"{WEIGHTS_FILE}: ") else GRAPH_FILE
        raise CheckpointError(f"{folder / about}: {text.removeprefix(f'{WEIGHTS_FILE}: ')}") from None
    except (KeyError, TypeError, ValueError, nx.NetworkXException) as error:
        raise CheckpointError(f"{folder / GRAPH_FILE} is not a growsearch graph: {error!r}") from None


def _graph_from_data(data: Any, tensors: Mapping[str, Any], finite: Callable[[Any], bool]) -> ModuleGraph:
    attrs = check_node_link(data)
    meta = data["graph"]
    graph = ModuleGraph(tuple(meta["input_shape"]))
    order = nx.DiGraph()  # a sharing node is added after the node it shares
    order.add_nodes_from(attrs)
    order.add_edges_from((i, n) for n, a in attrs.items() if n != INPUT for i in a["inputs"])
    order.add_edges_from((a["shares"], n) for n, a in attrs.items() if n != INPUT and a.get("shares"))
    per_node: dict[str, dict[str, Any]] = {}
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
        try:
            layout = spec.state_layout()  # shapes and dtypes only: no initialisation, no random draw
        except Exception as error:  # noqa: BLE001 - whatever a spec's module refuses, named
            raise CheckpointError(
                f"node {node_id!r}: its spec {shown(attrs_of['spec'])} builds no module ({error})"
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
        _place(node, per_node.get(node_id, {}))
        _check_weights(node_id, node, layout)
        _check_per_task(node_id, node)
        _check_norms(node_id, node, layout)
        tensors_of_node = [
            *node.weights.items(),
            *((f"task {t}'s gate", g) for t, g in node.gates.items()),
            *((f"state {k}", v) for k, v in node.state.items()),
            *((f"task {t}'s {k}", v) for t, norm in node.norms.items() for k, v in norm.items()),
        ]
        for name, value in tensors_of_node:  # checksums prove the bytes, not that they are weights
            if _floating(value) and not finite(value):
                raise CheckpointError(
                    f"{WEIGHTS_FILE}: node {node_id!r}: {name} holds NaN or infinite values, not weights"
                )
    for task, head in meta["heads"].items():
        graph.set_head(int(task), head)
    graph.shapes()  # every node reads what its inputs give (a GraphError names the first that does not)
    return graph


def _place(node: Node, named: dict[str, Any]) -> None:
    """A node's tensors from the weights file, each where its key says it belongs."""
    for name, value in named.items():
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


def dtype_name(value: Any) -> str:
    """A tensor's dtype as torch and numpy both spell it: float32, int64, bool."""
    return str(value.dtype).removeprefix("torch.")


def _floating(value: Any) -> bool:
    return dtype_name(value).startswith(("float", "bfloat"))


def _numbers(value: Any) -> bool:
    """A gate or mask: floating numbers (not half precision) or booleans."""
    return dtype_name(value) == "bool" or (_floating(value) and dtype_name(value) != "float16")


def _check_weights(node_id: str, node: Node, layout: StateLayout) -> None:
    """The node's weights are the entries its spec's module has, of their shapes and dtypes (a checksum
    recomputed after a cast proves nothing)."""
    expected = {k: shape for k, (shape, _) in layout.items()}
    if node.shares and not node.spec.combines_shared:
        expected = {}  # it computes with the weights of the node it shares
    found = {k: tuple(v.shape) for k, v in node.weights.items()}
    if found != expected:
        raise CheckpointError(
            f"{WEIGHTS_FILE}: the weights of node {node_id!r} are {found}; its spec expects {expected}"
        )
    for name, value in node.weights.items():
        if dtype_name(value) != layout[name][1]:
            raise CheckpointError(
                f"{WEIGHTS_FILE}: node {node_id!r}: weight {name!r} is {dtype_name(value)}; its spec expects "
                f"{layout[name][1]}"
            )


def _check_norms(node_id: str, node: Node, layout: StateLayout) -> None:
    """Each task's own normalisation holds entries the spec's module has, of their shapes and dtypes."""
    for task, norm in node.norms.items():
        for name, value in norm.items():
            if layout.get(name) != (tuple(value.shape), dtype_name(value)):
                raise CheckpointError(
                    f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s normalisation entry {name!r} "
                    f"({dtype_name(value)} {tuple(value.shape)}) is none its spec has"
                )


def _check_per_task(node_id: str, node: Node) -> None:
    """Owner tensors are integer tensors of their parameter's shape; gates are vectors of numbers or
    booleans; a task's mask has its parameter's shape and names a parameter the node has."""
    for name, owners in node.owners.items():
        if (
            name not in node.weights
            or tuple(owners.shape) != tuple(node.weights[name].shape)
            or dtype_name(owners) not in INTEGERS
        ):
            raise CheckpointError(
                f"{WEIGHTS_FILE}: node {node_id!r}: the owners of {name!r} are {dtype_name(owners)} of shape "
                f"{tuple(owners.shape)}; expected task numbers (integers) of the parameter's shape"
            )
    for task, gate in node.gates.items():
        if len(gate.shape) != 1:
            raise CheckpointError(
                f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s gate has shape {tuple(gate.shape)}"
            )
        if not _numbers(gate):
            raise CheckpointError(
                f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s gate is {dtype_name(gate)}; "
                "expected numbers"
            )
    own = node.weights if not node.shares or node.spec.combines_shared else None
    for task, masks in node.masks.items():
        for name, mask in masks.items():
            if own is not None and (name not in own or tuple(own[name].shape) != tuple(mask.shape)):
                raise CheckpointError(
                    f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s mask of {name!r} has shape "
                    f"{tuple(mask.shape)}; "
                    f"the node's parameters are { {k: tuple(v.shape) for k, v in own.items()} }"
                )
            if not _numbers(mask):
                raise CheckpointError(
                    f"{WEIGHTS_FILE}: node {node_id!r}: task {task}'s mask of {name!r} is "
                    f"{dtype_name(mask)}; expected numbers"
                )
