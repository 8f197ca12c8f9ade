"""A shared, owner-tracked stack of layers that grows by unit groups: CPG's growing and PAE's expanding.

The stack is `ops.shared_stack`'s `{prefix}/L{i}`. Growing it adds, at every layer i, a group of new units
(conv: channels) `{prefix}/L{i}.g{k}` beside the existing ones: the new group reads everything layer i - 1
now outputs (its groups concatenated, the new one included), and the head of every task learnt afterwards
reads every group of the last layer. The new weights start FREE, so the task that grows trains them and
later tasks may claim what it prunes. Widths follow the authors' rule: growing the parameter multiplier m
(1 -> 1.5 -> 2 ...) makes every layer round(width * sqrt(m)) units wide.

Departure, for exactness: the authors' code widens every tensor in place (old units also get weights from
the new ones, free for the growing task) and evaluates an old task on a slice of the first channels. Here
old units read only what they read before, so an earlier task's view contains none of the new nodes and
its outputs stay bit-identical. (Widening a tensor in place, as `ops.widen` does, lengthens every dot
product that reads it: BLAS then sums in another order and old outputs move by ~1e-8.) So a growth step
adds fewer weights than the paper's (no new -> old connections).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from growsearch.methods.toolkit import INPUT, ModuleGraph, NodeSpec, Shape, head_node, head_spec, neurons, ops


def group_id(prefix: str, layer: int, step: int = 0) -> str:
    """The node id of `layer`'s unit group added by growth step `step` (0: the stack's own node)."""
    first = f"{prefix}/L{layer}"
    return first if step == 0 else f"{first}.g{step}"


def groups(graph: ModuleGraph, prefix: str, layer: int) -> list[str]:
    """The unit groups of `layer`, oldest first: `{prefix}/L{layer}`, then one per growth step."""
    found = [group_id(prefix, layer)] if group_id(prefix, layer) in graph else []
    step = 1
    while group_id(prefix, layer, step) in graph:
        found.append(group_id(prefix, layer, step))
        step += 1
    return found


def all_groups(graph: ModuleGraph, prefix: str, n_layers: int) -> list[str]:
    return [node_id for layer in range(n_layers) for node_id in groups(graph, prefix, layer)]


def growth_steps(graph: ModuleGraph, prefix: str) -> int:
    return max(0, len(groups(graph, prefix, 0)) - 1)


def widths(graph: ModuleGraph, prefix: str, n_layers: int) -> list[int]:
    """Units (channels) of every layer, all its groups together."""
    return [sum(neurons.width(graph.node(n).spec) for n in groups(graph, prefix, i)) for i in range(n_layers)]


def width_at(base: int, size_multiplier: float) -> int:
    """A layer's width when the network's parameters are `size_multiplier` times the base's."""
    return round(base * math.sqrt(size_multiplier))


def _concat_shape(graph: ModuleGraph, node_ids: Sequence[str]) -> Shape:
    shapes = graph.shapes(node_ids)
    first = shapes[node_ids[0]]
    return (sum(shapes[n][0] for n in node_ids), *first[1:])


def grow(
    graph: ModuleGraph, prefix: str, specs: Sequence[NodeSpec], size_multiplier: float, owner: int
) -> ModuleGraph:
    """The stack grown to `size_multiplier` (at least one unit per layer), a new group per layer, its
    weights FREE. `specs` are the stack's base layers."""
    grown = graph.copy()
    current = widths(grown, prefix, len(specs))
    step = growth_steps(grown, prefix) + 1
    added = []
    for layer, spec in enumerate(specs):
        extra = max(1, width_at(neurons.width(spec), size_multiplier) - current[layer])
        reads = groups(grown, prefix, layer - 1) if layer > 0 else [INPUT]
        node_id = group_id(prefix, layer, step)
        new_spec = neurons.resized(spec, _concat_shape(grown, reads), extra)
        merge = "concat" if len(reads) > 1 else None
        grown.add(node_id, new_spec, reads, owner, merge=merge, layer=layer)
        added.append(node_id)
    return ops.track_owners(grown, added)


def add_head(graph: ModuleGraph, task: int, prefix: str, n_layers: int, n_outputs: int) -> ModuleGraph:
    """A classifier for `task` reading every group of the stack's last layer."""
    grown = graph.copy()
    reads = groups(grown, prefix, n_layers - 1)
    spec = head_spec(_concat_shape(grown, reads), n_outputs)
    grown.add(head_node(task), spec, reads, task, merge="concat" if len(reads) > 1 else None)
    grown.set_head(task, head_node(task))
    return grown
