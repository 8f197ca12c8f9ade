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
- `compact`: the same backbone, CPG's way: the task trains its free weights (drawn afresh) and learns a mask
  picking which of the earlier backbone tasks' weights it uses, its weights pruned gradually to its
  `sparsity` during that training; it claims what it kept;
- `mask`: a binary mask over every weight of the frozen source path and a new head, no new weights
  (Piggyback);
- `adapt`: the source's layers, each plus a small adapter reading the layer's input (Learn to Grow's adapt).

Every move adds nodes only the new task's view reads, or, for the backbone, trains only weights no earlier
task owns; masks are the task's own. So any sequence of moves keeps every earlier task's outputs
bit-identical (`tests/methods/test_method_auto_grow.py` draws sequences). A task on the backbone is a source
for `reuse_below` and `reuse_above`: the new task's masks copy the source's view of the backbone layers it
reuses (the weights of tasks up to the source, times its own mask), so it computes the source's function
there while the backbone's free weights stay free for later tasks; the other moves start from frozen paths.
"""

from __future__ import annotations

import math

import torch

from growsearch.methods.algorithms import compacting
from growsearch.methods.algorithms.gradual_pruning import GradualPruner
from growsearch.methods.algorithms.layer_reuse import reusable_path, reuse_layer
from growsearch.methods.algorithms.weight_masks import mask_training, matrix_parameters
from growsearch.methods.toolkit import (
    FREE,
    INPUT,
    Activation,
    Adapter,
    Conv2d,
    Linear,
    ModuleGraph,
    Shape,
    TaskContext,
    Training,
    TrainingProgram,
    TrainingRun,
    head_node,
    layer_node,
    neurons,
    node_data,
    ops,
    reading,
)

MOVES = ("reuse_below", "reuse_above", "column", "widen", "backbone", "compact", "mask", "adapt")
SOURCED = ("reuse_below", "reuse_above", "widen", "mask", "adapt")  # moves that start from a source task
ON_BACKBONE = ("backbone", "compact")  # moves that train the shared backbone's free weights
BACKBONE = compacting.PREFIX  # the compacting pipeline's stack: CPG's picking and pruning act on it


def backbone_nodes(n_layers: int) -> list[str]:
    return ops.shared_layer_ids(BACKBONE, n_layers)


def on_backbone(graph: ModuleGraph, task: int) -> bool:
    """Whether `task`'s path is the shared backbone (it keeps training: no source for other moves)."""
    return backbone_nodes(1)[0] in graph.view(task)


def frozen_paths(graph: ModuleGraph, before: int) -> list[int]:
    """The earlier tasks whose paths are frozen: the sources the sourced moves may start from."""
    return [t for t in graph.tasks if t < before and not on_backbone(graph, t)]


def source_paths(graph: ModuleGraph, before: int) -> list[int]:
    """Every earlier task: the frozen paths, and the backbone's tasks (`reuse_below`'s sources too)."""
    return [t for t in graph.tasks if t < before]


def eligible(move: str, ctx: TaskContext, source: int) -> bool:
    """Whether `move` may start from `source` (a backbone task: only reusing its layers, whose view masks
    can copy; adapting and reusing above need layers that compute from the layer below alone)."""
    if on_backbone(ctx.committed, source) and move not in ("reuse_below", "reuse_above"):
        return False
    if move in ("adapt", "reuse_above"):
        return reusable_path(ctx.committed, source)
    return True


def shares_head(ctx: TaskContext, source: int) -> bool:
    """Whether the source's head names as many classes as the new task has (its head may be shared)."""
    graph = ctx.committed
    return graph.shapes([graph.head(source)])[graph.head(source)][0] == ctx.n_outputs


# ---- the moves -----------------------------------------------------------------------------------------
def reuse_below(ctx: TaskContext, source: int, depth: int) -> tuple[ModuleGraph, Training | None]:
    """The source's layers below `depth`, new layers above and a new head. From a backbone task: the new
    task sees those backbone layers as the source does (`source_view`), and none of their weights trains."""
    graph = ops.reuse_prefix(ctx.committed, ctx.task_id, source, depth, ctx.specs, ctx.n_outputs)
    if not on_backbone(ctx.committed, source):
        return graph, None
    graph, copied = source_view(graph, ctx.task_id, source, range(depth))
    fixed = {n: {name: torch.zeros_like(m) for name, m in named.items()} for n, named in copied.items()}
    return graph, Training(train_masks=fixed)


def source_view(
    graph: ModuleGraph, task: int, source: int, layers: range
) -> tuple[ModuleGraph, dict[str, dict[str, torch.Tensor]]]:
    """`graph` with `task`'s masks on the source's backbone layers `layers` copying the source's view of
    them: the weights of tasks up to the source, times the source's own masks (so later tasks' weights in
    the same layers, and the free ones, stay out). The masks, too."""
    path = graph.layer_nodes(source)
    copied: dict[str, dict[str, torch.Tensor]] = {}
    for layer in layers:
        node = graph.node(path[layer])
        held = node.masks.get(source, {})
        copied[path[layer]] = {
            name: (owners >= 0)
            & (owners <= source)
            & held.get(name, torch.ones_like(owners, dtype=torch.bool))
            for name, owners in node.owners.items()
        }
    return node_data.with_masks(graph, task, copied), copied


def reuse_above(ctx: TaskContext, source: int, depth: int, share_head: bool) -> ModuleGraph:
    """New layers 0..depth-1, then the source's layers from `depth` up applied to their output (nodes
    sharing their weights; from a backbone task, seen as the source sees them: `source_view`), then the
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
    if on_backbone(graph, source):
        graph, _ = source_view(graph, t, source, range(depth, len(ctx.specs)))
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


def compact(
    ctx: TaskContext, sparsity: float, epochs: int, masks: compacting.MaskSettings, every: int
) -> tuple[ModuleGraph, Training]:
    """The backbone (its free weights drawn afresh) and a new head. The task's training learns a mask
    picking which of the earlier backbone tasks' weights it uses (CPG's picking) while it trains the free
    ones, and prunes those gradually to `sparsity` during it (Zhu & Gupta's cubic ramp: a dense first
    epoch, the ramp, a last epoch at `sparsity`); it then claims what it kept. So the search scores the
    compacted candidate, the one a commit keeps."""
    graph = fresh_free_weights(backbone(ctx), len(ctx.specs))
    delay = 1 if epochs >= 3 else 0
    ramp = max(1, epochs - delay - 1)
    pruner = GradualPruner(
        compacting.prunable_entries(graph, ctx), 0.0, sparsity, ramp, every, delay_epochs=delay
    )
    pruning = pruner.training()
    picking = compacting.picking(graph, ctx, masks)
    if picking is None:  # the first backbone task: nothing to pick
        picking = Training()

    def start(run: TrainingRun) -> None:
        if picking.start is not None:  # the masks attach first: the pruner binds to the weights beneath
            picking.start(run)
        pruning.start(run)

    def finish(trained: ModuleGraph, program: TrainingProgram) -> ModuleGraph:
        trained = compacting.claim_kept(pruning.finish(trained, program), ctx, pruner.pruned)
        return trained if picking.finish is None else picking.finish(trained, program)

    return graph, Training(
        train_masks=pruner.train_masks(), start=start, after_step=pruning.after_step, finish=finish
    )


def fresh_free_weights(graph: ModuleGraph, n_layers: int) -> ModuleGraph:
    """The backbone with its free entries drawn afresh from each layer's initialisation (earlier tasks'
    pruning left them zero, a poor start for the new task; no task sees a free entry)."""
    fresh: dict[str, dict[str, torch.Tensor]] = {}
    for node_id in backbone_nodes(n_layers):
        node = graph.node(node_id)
        drawn = node.spec.build().state_dict()
        fresh[node_id] = {
            name: torch.where(owners == FREE, drawn[name], node.weights[name])
            for name, owners in node.owners.items()
        }
    return node_data.with_weights(graph, fresh)


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
