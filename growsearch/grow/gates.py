"""Unit gates on a shared stack: which units (features, or conv channels) a task uses, and which weights
connect used units.

A node's `gates[t]` holds one value per output unit for task t (1 open, 0 closed; HAT, XdG, CLNP). The
weights of a dense or conv layer connect its input units to its output units: `connection_masks` says,
per parameter, which entries join an output unit in one set to an input unit in another (a bias belongs
to its output unit). A dense layer that reads a flattened (C, H, W) output sees each channel's gate
repeated over its H x W positions, in torch's flatten order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from growsearch.errors import GraphError
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.specs import Conv2d, Linear


def gated_layers(graph: ModuleGraph, node_ids: Sequence[str]) -> None:
    """Refuse a stack that unit gates cannot describe: each node a dense or conv layer reading the one
    before it (the first reads the input)."""
    previous = INPUT
    for node_id in node_ids:
        node = graph.node(node_id)
        if not isinstance(node.spec, Linear | Conv2d) or node.inputs != (previous,):
            raise GraphError(
                f"unit gates need a chain of dense or conv layers; {node_id!r} is a {node.spec.kind} "
                f"reading {list(node.inputs)}"
            )
        previous = node_id


def n_units(graph: ModuleGraph, node_id: str) -> int:
    """Output units of a node: its features, or its channels."""
    return graph.shapes([node_id])[node_id][0]


def input_units(graph: ModuleGraph, node_id: str, previous: torch.Tensor) -> torch.Tensor:
    """The previous layer's per-unit values as the node's inputs see them (repeated over positions when
    a dense layer flattens a conv output)."""
    node = graph.node(node_id)
    shape = graph.shapes([node.inputs[0]])[node.inputs[0]]
    if isinstance(node.spec, Linear) and len(shape) == 3:
        return previous.repeat_interleave(math.prod(shape[1:]))
    return previous


def connection_masks(
    graph: ModuleGraph, node_id: str, outputs: torch.Tensor, inputs: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """Per parameter of the node, the entries joining an output unit where `outputs` is True to an input
    unit where `inputs` is True (None: every input, the data itself); a bias: its output unit's value."""
    node = graph.node(node_id)
    masks = {}
    wanted_in = None if inputs is None else input_units(graph, node_id, inputs)
    for name, value in node.weights.items():
        if value.shape[0] != outputs.numel():
            raise GraphError(f"{node_id!r}.{name} has {value.shape[0]} rows; the gate has {outputs.numel()}")
        shape = (-1,) + (1,) * (value.dim() - 1)
        mask = outputs.view(shape).expand(value.shape)
        if value.dim() >= 2 and wanted_in is not None:
            mask = mask & wanted_in.view(1, -1, *([1] * (value.dim() - 2))).expand(value.shape)
        masks[name] = mask.clone()
    return masks


def used_before(graph: ModuleGraph, node_id: str, task: int) -> torch.Tensor:
    """The units any task before `task` uses (its gate open): HAT's cumulative attention, binary."""
    node = graph.node(node_id)
    used = torch.zeros(n_units(graph, node_id), dtype=torch.bool)
    for t, gate in node.gates.items():
        if t < task:
            used |= gate > 0.5
    return used


def newly_used_share(graph: ModuleGraph, node_ids: Sequence[str], task: int) -> float:
    """The share of the nodes' units that task `task`'s gates open and no earlier task's do (0 before the
    task has gates)."""
    newly = total = 0
    for node_id in node_ids:
        gate = graph.node(node_id).gates.get(task)
        if gate is None:
            return 0.0
        newly += int(((gate > 0.5) & ~used_before(graph, node_id, task)).sum())
        total += gate.numel()
    return newly / max(total, 1)
