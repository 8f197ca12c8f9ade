"""Neuron-level growth: a task adds units (filters) to layers as new parallel groups beside the old ones.

Used by RCL (Xu & Zhu 2018) and CLEAS (Gao et al. 2020); `widen_path` widens one earlier task's path
(auto-grow's widening move). Layer i of task t's network is the concatenation
of unit groups: the groups earlier tasks added at layer i (frozen nodes, each still reading exactly the
inputs it read when it was trained) and, if t adds units there, a new group `t{t}/L{i}` that reads the
concatenation of task t's layer i - 1. Old units therefore compute bit-identical outputs for every task,
and an older task's view never contains a newer group. A task may drop old units (CLEAS): its new groups
and head then get zero weights from them, owned by the task so they never train.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch

from growsearch.errors import GraphError
from growsearch.graph.module_graph import FREE, INPUT, ModuleGraph
from growsearch.graph.node_ids import head_node, layer_node
from growsearch.graph.specs import Activation, Conv2d, Head, Linear, NodeSpec, Shape
from growsearch.grow.backbone import head_spec


def width(spec: NodeSpec) -> int:
    """Units of a dense layer, filters of a convolution."""
    if isinstance(spec, Conv2d):
        return spec.out_channels
    if isinstance(spec, Linear):
        return spec.out_features
    raise GraphError(f"unit growth works on linear and conv layers, not {spec.kind}")


def layer_groups(graph: ModuleGraph, layer: int, before_task: int) -> list[str]:
    """The unit groups that tasks before `before_task` added at `layer`, oldest first."""
    found = [
        (node.owner, node_id)
        for node_id, node in graph.nodes()
        if node.layer == layer and 0 <= node.owner < before_task and not isinstance(node.spec, Head)
    ]
    return [node_id for _, node_id in sorted(found)]


def resized(spec: NodeSpec, input_shape: Shape, units: int) -> NodeSpec:
    """`spec` reading `input_shape` and producing `units` units (filters)."""
    if isinstance(spec, Conv2d):
        return replace(spec, in_channels=input_shape[0], out_channels=units)
    if isinstance(spec, Linear) and not isinstance(spec, Head):
        flat = len(input_shape) > 1
        return replace(spec, in_features=math.prod(input_shape), out_features=units, flatten=flat)
    raise GraphError(f"unit growth works on linear and conv layers, not {spec.kind}")


def grow_units(
    graph: ModuleGraph,
    task: int,
    specs: Sequence[NodeSpec],
    added: Sequence[int],
    n_outputs: int,
    keep: Mapping[str, torch.Tensor] | None = None,
) -> ModuleGraph:
    """Task `task`'s network: at layer i the old groups (all of them, or those with a unit in `keep`, a
    bool mask per group of the units the task reuses) and `added[i]` new units; then a new head."""
    if len(added) != len(specs):
        raise GraphError(f"expected one unit count per layer ({len(specs)}), got {list(added)}")
    grown = graph.copy()
    keep = dict(keep or {})
    reads = [INPUT]
    for layer, spec in enumerate(specs):
        old = [n for n in layer_groups(grown, layer, task) if n not in keep or bool(keep[n].any())]
        new = []
        if added[layer] > 0:
            new = [layer_node(task, layer)]
            shape = _concat_shape(grown, reads)
            _add_reader(grown, new[0], resized(spec, shape, added[layer]), reads, task, keep, layer)
        reads = old + new
        if not reads:
            raise GraphError(f"task {task} keeps no unit at layer {layer}: the layer would be empty")
    _add_reader(grown, head_node(task), head_spec(_concat_shape(grown, reads), n_outputs), reads, task, keep)
    grown.set_head(task, head_node(task))
    return grown


def widen_path(
    graph: ModuleGraph,
    task: int,
    source: int,
    specs: Sequence[NodeSpec],
    units: Sequence[int],
    n_outputs: int,
) -> ModuleGraph:
    """Task `task`'s network: `source`'s path with every layer widened (RCL's and DEN's expansion, on one
    earlier path): at layer i a new group of `units[i]` units (`t{task}/L{i}.units`, shaped like `specs[i]`)
    reads the widened layer below, the source's layer keeps its weights and reads what it read, and a join
    `t{task}/L{i}` concatenates the two (new first, so the task's path runs through its joins); a new head
    reads the last join. Every earlier task's view is untouched."""
    old = graph.layer_nodes(source)
    if sorted(old) != list(range(len(specs))) or len(units) != len(specs):
        raise GraphError(
            f"task {source}'s path has layers {sorted(old)}; widening it needs {len(specs)} layers and one "
            f"unit count per layer, got {list(units)}"
        )
    grown, previous = graph.copy(), INPUT
    for layer, spec in enumerate(specs):
        if units[layer] < 1:
            raise GraphError(
                f"widening adds at least one unit per layer, not {units[layer]} at layer {layer}"
            )
        group = layer_node(task, layer, ".units")
        shape = grown.shapes([previous])[previous]
        grown.add(group, resized(spec, shape, units[layer]), [previous], task, layer=layer)
        join = layer_node(task, layer)
        grown.add(join, Activation(None), [group, old[layer]], task, merge="concat", layer=layer)
        previous = join
    shape = grown.shapes([previous])[previous]
    grown.add(head_node(task), head_spec(shape, n_outputs), [previous], task)
    grown.set_head(task, head_node(task))
    return grown


def _concat_shape(graph: ModuleGraph, node_ids: list[str]) -> Shape:
    shapes = graph.shapes(node_ids)
    first = shapes[node_ids[0]]
    return (sum(shapes[n][0] for n in node_ids), *first[1:])


def _add_reader(
    graph: ModuleGraph,
    node_id: str,
    spec: NodeSpec,
    inputs: list[str],
    task: int,
    keep: Mapping[str, torch.Tensor],
    layer: int | None = None,
) -> None:
    """Add a node reading the concatenation of `inputs`; zero (and hand to `task`) its weights from the
    units `keep` drops."""
    merge = "concat" if len(inputs) > 1 else None
    node = graph.add(node_id, spec, inputs, task, merge=merge, layer=layer)
    shapes = graph.shapes(inputs)
    kept = [keep.get(n, torch.ones(shapes[n][0], dtype=torch.bool)) for n in inputs]
    channels = torch.cat(kept) if inputs != [INPUT] else torch.ones(shapes[INPUT][0], dtype=torch.bool)
    if bool(channels.all()):
        return
    dense = isinstance(spec, Linear)
    spatial = math.prod(shapes[inputs[0]][1:]) if dense else 1
    columns = channels.repeat_interleave(spatial)  # a flattened conv input: one column per channel pixel
    for name, weight in node.weights.items():
        node.owners[name] = torch.full(weight.shape, FREE, dtype=torch.int16)
        if weight.dim() >= 2 and weight.shape[1] == columns.numel():
            node.owners[name][:, ~columns] = task
            weight[:, ~columns] = 0.0
