"""Align the candidates of one task into one template graph, so that they can train side by side (packed).

The candidates of a growth search differ in how wide their new nodes are and in which nodes those read
(RCL's units per layer, CLEAS's dropped groups, MNTDP's reuse depth). The template holds every node any
candidate has. A node that trains in the candidates is, in the template, as wide as its widest version and
reads the union of the inputs its versions read, concatenated; frozen nodes are the same in every
candidate and appear once. Candidate k *is* the template with its own weights placed in each node's
leading units and in the column segments of the inputs it reads, zeros everywhere else, and a mask of the
entries it trains: a padded unit's weights are zero and nothing reads it with a non-zero weight, so the
template with candidate k's weights computes candidate k's function (up to the order of summation).

Dense (`Linear`, `Head`) and convolution nodes are padded; a trainable node of any other kind must be the
same in every candidate that has it. Anything else (a node trainable in one candidate and frozen in
another, a frozen node whose weights differ, inputs in conflicting orders, sum merges of different
widths) is refused with a `GraphError`, and the caller trains those candidates one by one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import torch

from growsearch.errors import GraphError
from growsearch.graph.module_graph import FREE, INPUT, ModuleGraph, Node
from growsearch.graph.specs import Conv2d, Linear, NodeSpec, Shape, spec_from_dict


def _width(spec: NodeSpec) -> int | None:
    """Output units of a node kind the template pads (None: not padded)."""
    if isinstance(spec, Linear):
        return spec.out_features
    if isinstance(spec, Conv2d):
        return spec.out_channels
    return None


def _resized(spec: NodeSpec, in_size: int, out_size: int) -> NodeSpec:
    if isinstance(spec, Linear):
        return dataclasses.replace(spec, in_features=in_size, out_features=out_size)
    assert isinstance(spec, Conv2d)
    return dataclasses.replace(spec, in_channels=in_size, out_channels=out_size)


def _same_but_widths(a: NodeSpec, b: NodeSpec) -> bool:
    return type(a) is type(b) and _resized(a, 0, 0) == _resized(b, 0, 0)


def _merged_order(orders: Sequence[Sequence[str]]) -> list[str]:
    """One order of every id that keeps each given order (their union as a DAG); GraphError on a cycle."""
    precedence = nx.DiGraph()
    for order in orders:
        precedence.add_nodes_from(order)
        precedence.add_edges_from(zip(order, order[1:], strict=False))
    try:
        return list(nx.lexicographical_topological_sort(precedence))
    except nx.NetworkXUnfeasible:
        raise GraphError(f"candidates read their inputs in conflicting orders: {list(orders)}") from None


@dataclass(frozen=True)
class Placement:
    """Where one candidate parameter lies in the template's: `flat` holds, for each of its entries, the
    index of the template entry it occupies."""

    flat: torch.Tensor  # long, the candidate parameter's shape

    def embed(self, value: torch.Tensor, template_shape: torch.Size) -> torch.Tensor:
        out = torch.zeros(template_shape, dtype=value.dtype)
        out.view(-1)[self.flat.reshape(-1)] = value.reshape(-1)
        return out

    def extract(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(-1)[self.flat.reshape(-1)].view(self.flat.shape)


@dataclass
class Alignment:
    """K candidates of `task` as one template graph (see the module docstring)."""

    task: int
    template: ModuleGraph
    candidates: list[ModuleGraph]
    trainable: list[str]  # template nodes that train (in at least one candidate)
    placements: list[dict[tuple[str, str], Placement]]  # per candidate: (node, parameter) -> placement

    def layout(self) -> list[dict[str, Any]]:
        """The template's trainable nodes as plain data (JSON): what `align(..., layout=)` rebuilds the
        same template from, for a subset of the candidates (a resumed pack)."""
        nodes = []
        for node_id in self.trainable:
            node = self.template.node(node_id)
            nodes.append(
                {"id": node_id, "spec": node.spec.to_dict(), "inputs": list(node.inputs), "merge": node.merge}
            )
        return nodes

    def shape(self, node_id: str, name: str) -> torch.Size:
        return self.template.node(node_id).weights[name].shape

    def padded(self, k: int, node_id: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidate k's weights of a template parameter, zero-padded, and the mask of what it trains."""
        shape = self.shape(node_id, name)
        placement = self.placements[k].get((node_id, name))
        if placement is None:  # the candidate has no such node: all padding
            return torch.zeros(shape), torch.zeros(shape, dtype=torch.bool)
        node = self.candidates[k].node(node_id)
        value = node.weights[name]
        trains = (
            node.owners[name] == FREE if name in node.owners else torch.ones_like(value, dtype=torch.bool)
        )
        return placement.embed(value, shape), placement.embed(trains, shape)

    def write(self, k: int, node_id: str, name: str, padded: torch.Tensor) -> None:
        """Put candidate k's trained entries of a template parameter back into its graph (in place): where a
        weight is owner-tracked, only its free entries."""
        placement = self.placements[k].get((node_id, name))
        if placement is None:
            return
        node = self.candidates[k].node(node_id)
        value = placement.extract(padded.detach().cpu())
        if name in node.owners:
            value = torch.where(node.owners[name] == FREE, value, node.weights[name])
        node.weights[name] = value.clone()


def align(
    candidates: Sequence[ModuleGraph], task: int, layout: Sequence[Mapping[str, Any]] | None = None
) -> Alignment:
    """The template of `candidates` (graphs of `task`, each holding its head). With `layout` (an earlier
    alignment's `layout()`), the template is that one, so some of a pack's candidates train exactly as
    they did beside the others. GraphError names why they cannot share one."""
    views = [g.view(task) for g in candidates]
    heads = {g.head(task) for g in candidates}
    if len(heads) != 1:
        raise GraphError(f"candidates of task {task} end in different heads: {sorted(heads)}")
    shapes = [g.shapes(v) for g, v in zip(candidates, views, strict=True)]
    versions: dict[str, list[tuple[int, Node]]] = {}
    for k, (graph, view) in enumerate(zip(candidates, views, strict=True)):
        for node_id in view:
            versions.setdefault(node_id, []).append((k, graph.node(node_id)))
    orders = list(views)
    if layout is not None:
        orders += _layout_versions(candidates[0], layout, versions)
    order = _merged_order(orders)
    template = ModuleGraph(candidates[0].input_shape)
    template_shapes: dict[str, Shape] = {INPUT: template.input_shape}
    trainable: list[str] = []
    placements: list[dict[tuple[str, str], Placement]] = [{} for _ in candidates]
    for node_id in order:
        if node_id == INPUT:
            continue
        present = versions[node_id]
        frozen = {node.frozen for _, node in present}
        if len(frozen) > 1:
            raise GraphError(f"node {node_id!r} trains in some candidates and is frozen in others")
        if frozen == {True}:
            _add_frozen(template, node_id, present)
        else:
            trainable.append(node_id)
            _add_padded(template, node_id, present, template_shapes, shapes, placements)
        template_shapes[node_id] = template.shapes([node_id])[node_id]
    template.set_head(task, heads.pop())
    alignment = Alignment(task, template, list(candidates), trainable, placements)
    if layout is not None and alignment.layout() != [dict(entry) for entry in layout]:
        raise GraphError("the candidates do not fit the pack layout recorded for them")
    return alignment


def _layout_versions(
    graph: ModuleGraph, layout: Sequence[Mapping[str, Any]], versions: dict[str, list[tuple[int, Node]]]
) -> list[list[str]]:
    """Add the layout's nodes as versions no candidate holds weights for (number -1), and the frozen nodes
    they read that no candidate's view has (from the committed part of `graph`); their orders."""
    orders = []
    for entry in layout:
        node_id, inputs = str(entry["id"]), tuple(entry["inputs"])
        node = Node(spec=spec_from_dict(entry["spec"]), owner=FREE, inputs=inputs, merge=entry["merge"])
        versions.setdefault(node_id, []).append((-1, node))
        for source in inputs:
            if source not in versions and source in graph:
                upstream = graph.upstream(source)
                for frozen_id in upstream:
                    if frozen_id not in versions and frozen_id != INPUT:
                        versions[frozen_id] = [(-1, graph.node(frozen_id))]
                orders.append(upstream)
        orders.append([*inputs, node_id])
    return orders


def _add_frozen(template: ModuleGraph, node_id: str, present: list[tuple[int, Node]]) -> None:
    _, first = present[0]
    for _, node in present[1:]:
        same = (node.spec, node.inputs, node.merge, node.shares) == (
            first.spec,
            first.inputs,
            first.merge,
            first.shares,
        ) and all(torch.equal(node.weights[n], w) for n, w in first.weights.items())
        if not same:
            raise GraphError(f"frozen node {node_id!r} differs between candidates")
    added = template.add(
        node_id,
        first.spec,
        first.inputs,
        first.owner,
        merge=first.merge,
        layer=first.layer,
        frozen=True,
        weights=first.weights,
        shares=first.shares,
    )
    added.owners, added.gates, added.masks, added.state = first.owners, first.gates, first.masks, first.state


def _add_padded(
    template: ModuleGraph,
    node_id: str,
    present: list[tuple[int, Node]],
    template_shapes: dict[str, Shape],
    shapes: list[dict[str, Shape]],
    placements: list[dict[tuple[str, str], Placement]],
) -> None:
    """Add the widest version of a trainable node, reading the union of its versions' inputs, and record
    where each candidate's parameters lie in it."""
    _, first = present[0]
    inputs = _merged_order([node.inputs for _, node in present])
    padded_kind = _width(first.spec) is not None
    for _, node in present:
        if node.gates or node.masks or node.shares:
            raise GraphError(f"node {node_id!r} carries gates, masks or shared weights; it is not padded")
        if padded_kind and not _same_but_widths(node.spec, first.spec):
            raise GraphError(f"node {node_id!r} differs between candidates in more than its width")
        if not padded_kind and (node.spec, node.inputs, node.merge) != (
            first.spec,
            first.inputs,
            first.merge,
        ):
            raise GraphError(f"node {node_id!r} ({first.spec.kind}) differs between candidates")
        if len(node.inputs) > 1 and node.merge != "concat" and node.inputs != tuple(inputs):
            raise GraphError(f"node {node_id!r} merges by {node.merge} over different inputs")
    merge = first.merge if len(inputs) == len(first.inputs) else "concat"
    if not padded_kind:
        spec = first.spec
    else:
        width = max(_width(node.spec) or 0 for _, node in present)
        merged = (
            _concat([template_shapes[i] for i in inputs]) if merge != "sum" else template_shapes[inputs[0]]
        )
        in_size = math.prod(merged) if isinstance(first.spec, Linear) else merged[0]
        spec = _resized(first.spec, in_size, width)
    with torch.device("meta"):
        meta = spec.build().state_dict()
    weights = {name: torch.zeros(value.shape) for name, value in meta.items()}
    template.add(node_id, spec, inputs, first.owner, merge=merge, layer=first.layer, weights=weights)
    for k, node in present:
        if k < 0:  # a layout's version: it shapes the template, no candidate's weights go there
            continue
        columns = _columns(node, inputs, template_shapes, shapes[k]) if padded_kind else None
        for name, value in node.weights.items():
            placements[k][(node_id, name)] = _placement(weights[name].shape, value.shape, columns)


def _concat(shapes: list[Shape]) -> Shape:
    if any(len(s) == 2 for s in shapes):  # joined step by step: a flattened segment is not contiguous
        raise GraphError("a padded node reading concatenated sequences is not aligned")
    return (sum(s[0] for s in shapes), *shapes[0][1:])


def _columns(
    node: Node, inputs: list[str], template_shapes: dict[str, Shape], own: dict[str, Shape]
) -> list[int]:
    """For a padded node: the template input column (dense: feature; conv: channel) of each of the
    candidate's input columns, segment by segment of its concatenated inputs."""
    dense = isinstance(node.spec, Linear)
    if node.merge == "sum":
        size = math.prod(own[node.inputs[0]]) if dense else own[node.inputs[0]][0]
        return list(range(size))
    columns: list[int] = []
    offset = 0
    for source in inputs:
        size_t = math.prod(template_shapes[source]) if dense else template_shapes[source][0]
        if source in node.inputs:
            size = math.prod(own[source]) if dense else own[source][0]
            columns.extend(range(offset, offset + size))  # channel-major: padded channels come last
        offset += size_t
    return columns


def _placement(template_shape: torch.Size, shape: torch.Size, columns: list[int] | None) -> Placement:
    """Rows are the leading output units; columns (dim 1) follow `columns` where the parameter has them."""
    index = torch.arange(math.prod(template_shape)).view(template_shape)
    if len(shape) == 0:
        return Placement(index)
    index = index[: shape[0]]
    if len(shape) > 1:
        cols = torch.tensor(columns if columns is not None else range(shape[1]), dtype=torch.long)
        if len(cols) != shape[1]:
            raise GraphError(
                f"a parameter of shape {tuple(shape)} does not fit its template {tuple(template_shape)}"
            )
        index = index.index_select(1, cols)
        index = index[(slice(None), slice(None), *(slice(0, s) for s in shape[2:]))]
    if index.shape != shape:
        raise GraphError(
            f"a parameter of shape {tuple(shape)} does not fit its template {tuple(template_shape)}"
        )
    return Placement(index)
