"""graph.json checked before anything is built from it: a checksum proves the file is whole, not that it is
a graph. Every field has its type, sizes are >= 0 and fit a tensor, the nodes named exist, the edges are the
nodes' inputs, and the inputs (and weight sharing) form no cycle. Torch-free: `growsearch inspect` checks
a graph it reads as `resume` does.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

import networkx as nx

from growsearch.errors import CheckpointError
from growsearch.graph.module_graph import FREE, INPUT, MERGES
from growsearch.graph.specs import Input, node_kind_class

# 2: a node may share another's weights (`shares`); 3: per-task gates and masks; 4: a task's own
# normalisation. Older files load as they are (they hold none of these).
FORMAT_VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)
_MAX_SIZE = 2**31 - 1  # a spec's sizes and the input's: what a tensor dimension may hold


def check_node_link(data: Any) -> dict[str, dict[str, Any]]:
    """graph.json's fields, every one checked before anything is built from them: a checksum proves the file
    is whole, not that it is a graph. Returns the nodes' attributes by id."""
    if not isinstance(data, dict) or not isinstance(data.get("graph"), dict):
        raise CheckpointError("expected networkx node-link data with a 'graph' mapping")
    if data.get("directed") is not True or data.get("multigraph") is not False:
        raise CheckpointError("directed / multigraph: expected a directed graph without parallel edges")
    meta = data["graph"]
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"graph format_version {shown(meta.get('format_version'))}; expected one of {READABLE_VERSIONS}"
        )
    shape = meta.get("input_shape")
    if not isinstance(shape, list) or not shape or not all(_size(d, 1) for d in shape):
        raise CheckpointError(f"graph.input_shape: expected a list of sizes >= 1, got {shown(shape)}")
    nodes, edges = data.get("nodes"), data.get("edges")
    if not isinstance(nodes, list) or not isinstance(edges, list):
        raise CheckpointError("expected lists 'nodes' and 'edges'")
    attrs: dict[str, dict[str, Any]] = {}
    for entry in nodes:
        node_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(node_id, str) or not node_id:
            raise CheckpointError(
                f"nodes: expected each node a mapping with a string 'id', got {shown(entry)}"
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
            raise CheckpointError(f"edges: {shown(edge)} is not one of the nodes' inputs")
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
        raise CheckpointError(f"graph.heads: expected a mapping of tasks to head nodes, got {shown(heads)}")
    for task, head in heads.items():
        if not task.isdigit() or head not in attrs or head == INPUT:
            raise CheckpointError(f"graph.heads: task {task!r} -> {shown(head)}; expected a task and a node")
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
                f"node {node_id!r}: {name}: expected {expected}, got {shown(entry.get(name))}"
            )
    if node_id in entry["inputs"]:
        raise CheckpointError(f"node {node_id!r} reads itself (a self-loop); a graph has none")
    shares = entry.get("shares")
    if shares is not None and (not isinstance(shares, str) or shares not in attrs or shares == node_id):
        raise CheckpointError(
            f"node {node_id!r}: shares: expected null or another node's id, got {shown(shares)}"
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
                f"{' >= 0' if _counts(hints.get(field.name)) else ''}, got {shown(value)}"
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


def shown(value: Any) -> str:
    text = repr(value) if not _int(value) or abs(value) < 10**30 else "a very large integer"
    return text if len(text) <= 80 else text[:77] + "..."
