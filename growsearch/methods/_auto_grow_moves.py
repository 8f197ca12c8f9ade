"""auto-grow's growth moves: each grows a task's candidate from the committed graph in one of the survey's
ways, on the one module graph every move shares. Pure functions of (context, source, parameters).

- `reuse_below`: a source task's layers below k, new layers from k up and a new head (MNTDP; k = L: a new
  head only);
- `reuse_above`: new layers below k, the source's layers from k up applied to them (nodes sharing their
  weights), and the source's head shared or a new one: new inputs, old labels;
- `column`: a new column, with lateral adapters from earlier frozen paths (PNN) or without;
- `widen`: the source's path with every layer widened by new units reading the widened layer below, the
  old units frozen (RCL's and DEN's expansion);
- `backbone`: the shared owner-tracked backbone (created by its first user): the task trains its free
  weights, prunes and claims its share at the commit (PackNet);
- `mask`: a binary mask over every weight of the frozen source path and a new head, no new weights
  (Piggyback);
- `adapt`: the source's layers, each plus a small adapter reading the layer's input (Learn to Grow's adapt).

Every move adds nodes only the new task's view reads, or, for the backbone, trains only weights no earlier
task owns; masks are the task's own. So any sequence of moves keeps every earlier task's outputs
bit-identical (`tests/methods/test_method_auto_grow.py` draws sequences). A task whose path is the backbone
is never a source for the other moves: the backbone keeps training for later backbone tasks.
"""

from __future__ import annotations

import math

from growsearch.methods.algorithms.layer_reuse import reusable_path, reuse_layer
from growsearch.methods.algorithms.weight_masks import mask_training, matrix_parameters
from growsearch.methods.toolkit import (
    INPUT,
    Activation,
    Adapter,
    Conv2d,
    Linear,
    ModuleGraph,
    Shape,
    TaskContext,
    Training,
    head_node,
    layer_node,
    neurons,
    ops,
    reading,
)

MOVES = ("reuse_below", "reuse_above", "column", "widen", "backbone", "mask", "adapt")
SOURCED = ("reuse_below", "reuse_above", "widen", "mask", "adapt")  # moves that start from a source task
BACKBONE = "shared"


def backbone_nodes(n_layers: int) -> list[str]:
    return ops.shared_layer_ids(BACKBONE, n_layers)


def on_backbone(graph: ModuleGraph, task: int) -> bool:
    """Whether `task`'s path is the shared backbone (it keeps training: no source for other moves)."""
    return backbone_nodes(1)[0] in graph.view(task)


def frozen_paths(graph: ModuleGraph, before: int) -> list[int]:
    """The earlier tasks whose paths are frozen: the sources the sourced moves may start from."""
    return [t for t in graph.tasks if t < before and not on_backbone(graph, t)]


def eligible(move: str, ctx: TaskContext, source: int) -> bool:
    """Whether `move` may start from `source` (adapting and reusing above need layers that compute from
    the layer below alone; sharing a head needs as many outputs)."""
    if move in ("adapt", "reuse_above"):
        return reusable_path(ctx.committed, source)
    return True


def shares_head(ctx: TaskContext, source: int) -> bool:
    """Whether the source's head names as many classes as the new task has (its head may be shared)."""
    graph = ctx.committed
    return graph.shapes([graph.head(source)])[graph.head(source)][0] == ctx.n_outputs


# ---- the moves -----------------------------------------------------------------------------------------
def reuse_below(ctx: TaskContext, source: int, depth: int) -> ModuleGraph:
    return ops.reuse_prefix(ctx.committed, ctx.task_id, source, depth, ctx.specs, ctx.n_outputs)


def reuse_above(ctx: TaskContext, source: int, depth: int, share_head: bool) -> ModuleGraph:
    """New layers 0..depth-1, then the source's layers from `depth` up applied to their output, then the
    source's head (shared) or a new one."""
    t, graph = ctx.task_id, ctx.committed.copy()
    path = graph.layer_nodes(source)
    previous = INPUT
    for layer in range(depth):
        spec = reading(ctx.specs[layer], graph.shapes([previous])[previous])
        graph.add(layer_node(t, layer), spec, [previous], t, layer=layer)
        previous = layer_node(t, layer)
    for layer in range(depth, len(ctx.specs)):
        source_in = path.get(layer - 1, INPUT)
        previous = reuse_layer(
            graph, source_in, path[layer], previous, layer_node(t, layer, ".reuse"), t, layer
        )
    if not share_head:
        return ops.add_head(graph, t, previous, ctx.n_outputs)
    head = graph.head(source)
    head = graph.node(head).shares or head  # the head whose weights the source's computes with
    graph.add(head_node(t), graph.node(head).spec, [previous], t, shares=head)
    graph.set_head(t, head_node(t))
    return graph


def column(ctx: TaskContext, laterals: bool) -> ModuleGraph:
    sources = frozen_paths(ctx.committed, ctx.task_id)
    return ops.add_column(
        ctx.committed, ctx.task_id, ctx.specs, ctx.n_outputs, laterals=laterals, lateral_tasks=sources
    )


def widen(ctx: TaskContext, source: int, units: int) -> ModuleGraph:
    added = [units] * len(ctx.specs)
    return neurons.widen_path(ctx.committed, ctx.task_id, source, ctx.specs, added, ctx.n_outputs)


def backbone(ctx: TaskContext) -> ModuleGraph:
    graph = ops.shared_stack(ctx.committed, BACKBONE, ctx.specs, ctx.task_id)
    return ops.add_head(graph, ctx.task_id, backbone_nodes(len(ctx.specs))[-1], ctx.n_outputs)


def mask(ctx: TaskContext, source: int, init: float, threshold: float) -> tuple[ModuleGraph, Training]:
    """A new head on the source's last layer, and the task's mask over every weight matrix the source's path
    holds itself learnt with it (a layer it shares from another path computes unmasked)."""
    graph = ctx.committed
    last = graph.node(graph.head(source)).inputs[0]
    grown = ops.add_head(graph, ctx.task_id, last, ctx.n_outputs)
    held = [n for n in grown.view(ctx.task_id) if n != grown.head(ctx.task_id) and graph.node(n).weights]
    path = [n for n in held if matrix_parameters(graph, n)]
    return grown, mask_training(grown, ctx.task_id, path, init, threshold)


def adapt(ctx: TaskContext, source: int, hidden: int | None) -> ModuleGraph:
    """Each of the source's layers applied to this task's previous layer, plus an adapter of that input
    (PNN's lateral form, `U relu(V alpha h)`, alpha starting small), summed; then a new head."""
    t, graph = ctx.task_id, ctx.committed.copy()
    path = graph.layer_nodes(source)
    previous = INPUT
    for layer in range(len(ctx.specs)):
        name, source_in = layer_node(t, layer, ".reuse"), path.get(layer - 1, INPUT)
        base = reuse_layer(graph, source_in, path[layer], previous, name, t, layer)
        shapes = graph.shapes([previous, base])
        adapter = layer_node(t, layer, ".adapter")
        spec = _adapter(ctx.specs[layer], shapes[previous], shapes[base], hidden)
        graph.add(adapter, spec, [previous], t, layer=layer)
        graph.add(layer_node(t, layer), Activation(None), [base, adapter], t, merge="sum", layer=layer)
        previous = layer_node(t, layer)
    return ops.add_head(graph, t, previous, ctx.n_outputs)


def _adapter(spec: Linear | Conv2d, input_shape: Shape, output_shape: Shape, hidden: int | None) -> Adapter:
    """An adapter from the layer's input to its output's shape (hidden: a tenth of the outputs, or given)."""
    width = hidden or max(1, output_shape[0] // 10)
    if isinstance(spec, Conv2d):
        k, s, p = spec.kernel_size, spec.stride, spec.padding
        return Adapter(input_shape[0], output_shape[0], width, k, s, p, spec.pool)
    return Adapter(math.prod(input_shape), output_shape[0], width, flatten=len(input_shape) > 1)
