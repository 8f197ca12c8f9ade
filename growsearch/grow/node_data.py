"""Growth operators on what a node keeps besides its structure: weights, a task's gates and masks, and the
state a method carries from task to task. Pure functions, like every operator in `grow/`: each returns a
changed copy and checks what it writes (the node exists, a tensor keeps its shape), so a method never
assigns to a node's fields itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from growsearch.errors import GraphError
from growsearch.graph.module_graph import ModuleGraph
from growsearch.graph.specs import norm_entries

NodeTensors = Mapping[str, Mapping[str, torch.Tensor]]  # node id -> name -> tensor


def with_weights(graph: ModuleGraph, weights: NodeTensors) -> ModuleGraph:
    """`graph` with the named weights of each node replaced (same names, same shapes; stored on the CPU,
    detached)."""
    grown = graph.copy()
    for node_id, named in weights.items():
        node = grown.node(node_id)
        for name, value in named.items():
            if name not in node.weights:
                raise GraphError(f"node {node_id!r} has no weight {name!r}; it has {sorted(node.weights)}")
            if tuple(value.shape) != tuple(node.weights[name].shape):
                raise GraphError(
                    f"node {node_id!r}: weight {name!r} has shape {tuple(node.weights[name].shape)}, "
                    f"not {tuple(value.shape)}"
                )
            node.weights[name] = value.detach().to("cpu", copy=True)
    return grown


def with_gates(graph: ModuleGraph, task: int, gates: Mapping[str, torch.Tensor]) -> ModuleGraph:
    """`graph` with task `task`'s gate on each node (one value per output unit: HAT's, XdG's, CLNP's)."""
    grown = graph.copy()
    shapes = grown.shapes(gates)
    for node_id, values in gates.items():
        units = shapes[node_id][0]
        if tuple(values.shape) != (units,):
            raise GraphError(
                f"node {node_id!r} has {units} output units; task {task}'s gate has shape "
                f"{tuple(values.shape)}"
            )
        grown.node(node_id).gates[task] = values.detach().to("cpu", copy=True)
    return grown


def without_gates(graph: ModuleGraph, task: int, node_ids: Iterable[str]) -> ModuleGraph:
    """`graph` with task `task`'s gates on `node_ids` removed (DER's masks, once its pruning applied them)."""
    grown = graph.copy()
    for node_id in node_ids:
        grown.node(node_id).gates.pop(task, None)
    return grown


def with_masks(graph: ModuleGraph, task: int, masks: NodeTensors) -> ModuleGraph:
    """`graph` with task `task`'s weight masks (node -> parameter -> multiplier, the parameter's shape:
    Piggyback's and CPG's picked weights) added to what the task's masks hold already."""
    grown = graph.copy()
    for node_id, named in masks.items():
        node = grown.node(node_id)
        for name, mask in named.items():
            if name not in node.weights or tuple(mask.shape) != tuple(node.weights[name].shape):
                raise GraphError(
                    f"node {node_id!r}: a mask of shape {tuple(mask.shape)} for {name!r} matches none of its "
                    f"weights { ({k: tuple(v.shape) for k, v in node.weights.items()}) }"
                )
            node.masks.setdefault(task, {})[name] = mask.detach().to("cpu", copy=True)
    return grown


def without_masks(graph: ModuleGraph, task: int, node_ids: Iterable[str]) -> ModuleGraph:
    """`graph` with task `task`'s weight masks on `node_ids` removed."""
    grown = graph.copy()
    for node_id in node_ids:
        grown.node(node_id).masks.pop(task, None)
    return grown


def with_state(graph: ModuleGraph, state: NodeTensors) -> ModuleGraph:
    """`graph` with each node's state entries set (what a method keeps with a node from task to task: a
    stabiliser's importance and anchors, a task classifier, a generator)."""
    grown = graph.copy()
    for node_id, named in state.items():
        node = grown.node(node_id)
        for key, value in named.items():
            node.state[key] = value.detach().to("cpu", copy=True)
    return grown


def with_task_norms(
    graph: ModuleGraph, task: int, node_ids: Iterable[str], start_from: int | None = None
) -> ModuleGraph:
    """`graph` with task `task`'s own normalisation on each node that has one (nodes without batch norm are
    left as they are): a copy of the set task `start_from` uses there (the node's creator's when None),
    which then trains with the task, even on a frozen node, while every other task keeps its own. A node
    sharing another's weights keeps the set on the node it shares."""
    grown = graph.copy()
    for node_id in node_ids:
        node = grown.node(node_id)
        holder = grown.node(node.shares) if node.shares else node
        names = norm_entries(holder.spec)
        if not names or task in holder.norms:
            continue
        source = holder.norms.get(start_from, {}) if start_from is not None else {}
        holder.norms[task] = {n: source.get(n, holder.weights[n]).detach().clone() for n in sorted(names)}
    return grown
