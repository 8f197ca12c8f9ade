"""Structured pruning: remove units (conv: channels) from a dense or conv node, and the weights that read
them, so the network really is smaller (DER's pruned feature extractor), not merely masked.

The units' readers are found through parameter-free joins (a concatenation of several nodes' outputs, an
activation): a dense reader loses the columns of the removed units (every position of a flattened conv
channel), a conv reader the input channels. Removing units that a view gates to zero leaves its outputs
unchanged.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from growsearch.errors import GraphError
from growsearch.graph.module_graph import ModuleGraph
from growsearch.graph.specs import Activation, Conv2d, Head, Linear


def remove_units(graph: ModuleGraph, node_id: str, keep: torch.Tensor) -> ModuleGraph:
    """A copy of `graph` in which node `node_id` keeps only the units where `keep` (one bool per unit)."""
    grown = graph.copy()
    node = grown.node(node_id)
    spec = node.spec
    if not isinstance(spec, Linear | Conv2d) or isinstance(spec, Head) or node.shares:
        raise GraphError(
            f"units can be removed from a dense or conv layer with weights of its own; {node_id!r} is a "
            f"{spec.kind}{' sharing weights' if node.shares else ''}"
        )
    _refuse_per_entry_data(graph, node_id)
    field = "out_features" if isinstance(spec, Linear) else "out_channels"
    width = getattr(spec, field)
    keep = keep.to(torch.bool).flatten()
    if keep.numel() != width or not keep.any():
        raise GraphError(
            f"removing units from {node_id!r}: expected a mask of its {width} units keeping at least one, "
            f"got {keep.numel()} values keeping {int(keep.sum())}"
        )
    shapes = grown.shapes()
    node.spec = replace(spec, **{field: int(keep.sum())})
    node.weights = {name: value[keep] for name, value in node.weights.items()}  # units are axis 0
    _drop_inputs(grown, node_id, keep, shapes)
    grown.shapes()  # every shape still fits
    return grown


def _drop_inputs(
    graph: ModuleGraph, source: str, kept: torch.Tensor, shapes: dict[str, tuple[int, ...]]
) -> None:
    """Remove from every reader of `source` what read its removed channels (`kept`: its output channels)."""
    for reader_id in graph.successors(source):
        reader = graph.node(reader_id)
        if len(reader.inputs) > 1 and reader.merge != "concat":
            raise GraphError(f"cannot remove units read by {reader_id!r}, which merges by {reader.merge}")
        # the reader's input channels: its inputs' channels side by side, only `source`'s changing
        channels = torch.cat(
            [kept if i == source else torch.ones(shapes[i][0], dtype=torch.bool) for i in reader.inputs]
        )
        spec = reader.spec
        _refuse_per_entry_data(graph, reader_id)
        if isinstance(spec, Activation):  # parameter-free: its readers see the same channels
            _drop_inputs(graph, reader_id, channels, shapes)
        elif isinstance(spec, Linear):
            input_shape = (sum(shapes[i][0] for i in reader.inputs), *shapes[reader.inputs[0]][1:])
            columns = channels.repeat_interleave(math.prod(input_shape[1:]))  # a flattened conv's positions
            reader.spec = replace(spec, in_features=int(columns.sum()))
            reader.weights = {n: v[:, columns] if v.dim() == 2 else v for n, v in reader.weights.items()}
        elif isinstance(spec, Conv2d):
            reader.spec = replace(spec, in_channels=int(channels.sum()))
            reader.weights = {n: v[:, channels] if v.dim() == 4 else v for n, v in reader.weights.items()}
        else:
            raise GraphError(f"cannot remove units read by {reader_id!r}, a {spec.kind}")


def _refuse_per_entry_data(graph: ModuleGraph, node_id: str) -> None:
    """Owners, masks and gates are kept per weight or per unit: removing units would leave them the wrong
    size, so such a node is refused (DER drops its masks' gates before it prunes)."""
    node = graph.node(node_id)
    kept = [
        name for name, data in (("owners", node.owners), ("masks", node.masks), ("gates", node.gates)) if data
    ]
    if kept:
        raise GraphError(f"cannot remove units at {node_id!r}: it keeps {', '.join(kept)} per weight or unit")
