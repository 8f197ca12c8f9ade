"""The per-task pipeline CPG and PAE share (Hung et al.): train the free weights, compact them by gradual
pruning, give the task what it keeps, retrain it; grow the shared stack when the method's rule says so.

One shared owner-tracked stack (`growing_stack`) plus a head per task. For task t:
1. train: every FREE weight trains (earlier tasks' weights are used but fixed; CPG: through a picking mask,
   `weight_masks`, that learns which of them the task uses);
2. compact: `gradual_pruning` stages prune the entries t trained back to FREE (zero) along a cubic
   schedule, fine-tuning the rest; each stage's validation accuracy is kept (the method picks a stage);
3. claim: t owns the entries it kept (and the FREE biases: the first task's, or a new group's), so every
   later task sees them fixed; a task's view is the weights owned by tasks <= t (times its own mask), so an
   old task's outputs are bit-identical after later tasks;
4. retrain (the candidate's training by the search: `training.epochs`): the kept weights, and CPG's
   picking mask resumed from where training left it (the authors' `--finetune_again` restarts it at 1e-2
   and keeps the result only if validation accuracy improves; the search keeps what it trains, and a
   resumed mask starts the retraining from the model that was validated).
Biases are trained by the task that creates them and then fixed (PackNet's rule; the authors keep biases
and batch norm per task, which owner-tracked weights cannot hold).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from growsearch.methods.algorithms import growing_stack as stack
from growsearch.methods.algorithms.gradual_pruning import Entries, GradualPruner, pruned_fraction
from growsearch.methods.algorithms.weight_masks import MaskKey, attach_masks, matrix_parameters, store_masks
from growsearch.methods.toolkit import (
    FREE,
    PLAIN,
    ModuleGraph,
    TaskContext,
    Training,
    TrainingConfig,
    TrainingProgram,
    TrainingResult,
    TrainingRun,
    evaluate,
    node_data,
    ops,
    require,
    resolve_device,
    train_candidate,
)

PREFIX = "shared"


@dataclass(frozen=True)
class CompactingOptions:
    """Settings CPG and PAE share (epochs scaled down from the authors' 100, 20 per stage)."""

    train_epochs: int = 10  # step 1: the free weights (and CPG's picking mask)
    prune_epochs: int = 2  # one pruning stage (the authors': 20)
    ramp_epochs: int = 1  # the cubic ramp at the start of a stage (the authors': 4 of 20)
    prune_every: int = 2  # steps between pruning updates (the authors': 10 iterations)
    growth_step: float = 0.5  # added to the parameter multiplier per growth (channels times its sqrt)
    max_size_multiplier: float = 1.5
    search: bool = False  # true: each task's sparsity is an Optuna decision
    sparsity_range: tuple[float, float] = (0.1, 0.95)

    def validate(self, where: str) -> None:
        require(self.train_epochs >= 1, f"{where}.train_epochs", "expected an integer >= 1")
        require(self.prune_epochs >= 1, f"{where}.prune_epochs", "expected an integer >= 1")
        require(
            1 <= self.ramp_epochs <= self.prune_epochs,
            f"{where}.ramp_epochs",
            "expected an integer in [1, prune_epochs]",
        )
        require(self.prune_every >= 1, f"{where}.prune_every", "expected an integer >= 1")
        require(self.growth_step > 0, f"{where}.growth_step", "expected a number > 0")
        require(self.max_size_multiplier >= 1, f"{where}.max_size_multiplier", "expected a number >= 1")
        low, high = self.sparsity_range
        require(
            0 <= low <= high < 1, f"{where}.sparsity_range", "expected [low, high] with 0 <= low <= high < 1"
        )


@dataclass(frozen=True)
class MaskSettings:
    """CPG's picking mask: the real-valued mask's initial value and threshold (Piggyback's)."""

    init: float
    threshold: float


@dataclass
class Stage:
    """A compacting stage's outcome: the task's entries pruned so far, the model, its validation accuracy."""

    sparsity: float
    val_accuracy: float
    graph: ModuleGraph
    pruned: Entries


# ---- the stack ---------------------------------------------------------------------------------------------
def base_stack(ctx: TaskContext) -> ModuleGraph:
    return ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id)


def stack_nodes(graph: ModuleGraph, ctx: TaskContext) -> list[str]:
    return stack.all_groups(graph, PREFIX, len(ctx.specs))


def size_multiplier(graph: ModuleGraph, options: CompactingOptions) -> float:
    return 1.0 + options.growth_step * stack.growth_steps(graph, PREFIX)


def can_grow(graph: ModuleGraph, options: CompactingOptions) -> bool:
    return size_multiplier(graph, options) + options.growth_step <= options.max_size_multiplier + 1e-9


def grow(graph: ModuleGraph, ctx: TaskContext, options: CompactingOptions) -> ModuleGraph:
    target = size_multiplier(graph, options) + options.growth_step
    return stack.grow(graph, PREFIX, ctx.specs, target, ctx.task_id)


def with_head(graph: ModuleGraph, ctx: TaskContext) -> ModuleGraph:
    return stack.add_head(graph, ctx.task_id, PREFIX, len(ctx.specs), ctx.n_outputs)


def free_share(graph: ModuleGraph, ctx: TaskContext) -> float:
    """The smallest share of FREE weights over the stack's layers (PAE's capacity left)."""
    shares = []
    for layer in range(len(ctx.specs)):
        owners = _layer_owners(graph, stack.groups(graph, PREFIX, layer))
        shares.append(float((owners == FREE).float().mean()))
    return min(shares)


# ---- training ----------------------------------------------------------------------------------------------
def _seed() -> int:
    return int(torch.randint(2**31 - 1, ()).item())  # torch's global stream is seeded per trial


def train(
    graph: ModuleGraph, ctx: TaskContext, config: TrainingConfig, epochs: int, training: Training | None
) -> TrainingResult:
    task = ctx.task
    return train_candidate(
        graph,
        ctx.task_id,
        task.train,
        task.val,
        config,
        seed=_seed(),
        epochs=epochs,
        training=training or PLAIN,
    )


def train_accuracy(graph: ModuleGraph, ctx: TaskContext, config: TrainingConfig) -> float:
    return evaluate(
        graph, ctx.task_id, ctx.task.train, include_free=True, device=resolve_device(config.device)
    )


def picking(
    graph: ModuleGraph,
    ctx: TaskContext,
    mask: MaskSettings,
    train_masks: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    start: Mapping[MaskKey, torch.Tensor] | None = None,
) -> Training | None:
    """A mask over every earlier task's weight in the stack, learnt with the task (from `start`'s binary
    masks, else from scratch) and stored as its mask; its gradient reaches only those entries (the task's
    own and free entries stay 1). None: nothing to pick."""
    old = {}
    for node_id in stack_nodes(graph, ctx):
        owners = graph.node(node_id).owners
        params = {n: (owners[n] >= 0) & (owners[n] < ctx.task_id) for n in matrix_parameters(graph, node_id)}
        old[node_id] = {n: where for n, where in params.items() if where.any()}
    if not any(old.values()):
        return None
    attached = {}

    def attach(run: TrainingRun) -> None:
        attached.update(attach_masks(run.program, old, mask.init, mask.threshold, start))

    def finish(trained: ModuleGraph, program: TrainingProgram) -> ModuleGraph:
        return store_masks(trained, ctx.task_id, attached)

    return Training(train_masks=train_masks, start=attach, finish=finish)


def prunable_entries(graph: ModuleGraph, ctx: TaskContext) -> Entries:
    """The entries the task trains and may prune: every FREE entry of the stack's weight matrices."""
    entries = {}
    for node_id in stack_nodes(graph, ctx):
        for name in matrix_parameters(graph, node_id):
            entries[node_id, name] = graph.node(node_id).owners[name] == FREE
    return entries


def compact(
    trained: ModuleGraph,
    ctx: TaskContext,
    config: TrainingConfig,
    sparsities: tuple[float, ...],
    options: CompactingOptions,
) -> list[Stage]:
    """Prune the task's entries stage by stage to each of `sparsities` (increasing), fine-tuning the rest;
    every stage's model and validation accuracy."""
    prunable = prunable_entries(trained, ctx)
    stages, graph, pruned, previous = [], trained, None, 0.0
    for sparsity in sparsities:
        pruner = GradualPruner(
            prunable, previous, sparsity, options.ramp_epochs, options.prune_every, pruned=dict(pruned or {})
        )
        result = train(graph, ctx, config, options.prune_epochs, pruner.training())
        graph, pruned, previous = result.graph, pruner.pruned, sparsity
        stages.append(Stage(sparsity, result.val_accuracy, graph, pruned))
    return stages


def claim_kept(graph: ModuleGraph, ctx: TaskContext, pruned: Entries) -> ModuleGraph:
    """The task owns every FREE entry of the stack it did not prune (its kept weights, and the FREE biases);
    the pruned ones are zero and stay FREE."""
    zeroed: dict[str, dict[str, torch.Tensor]] = {}
    kept: dict[str, dict[str, torch.Tensor]] = {}
    for node_id in stack_nodes(graph, ctx):
        node = graph.node(node_id)
        for name, owners in node.owners.items():
            free = owners == FREE
            dropped = pruned.get((node_id, name), torch.zeros_like(free))
            zeroed.setdefault(node_id, {})[name] = node.weights[name].masked_fill(free & dropped, 0.0)
            kept.setdefault(node_id, {})[name] = ~dropped
    return ops.claim_entries(node_data.with_weights(graph, zeroed), ctx.task_id, kept)


def take_masks(graph: ModuleGraph, ctx: TaskContext) -> tuple[ModuleGraph, dict[MaskKey, torch.Tensor]]:
    """`graph` without the task's masks on the stack's nodes, and those masks."""
    taken = {}
    for node_id in stack_nodes(graph, ctx):
        for name, mask in graph.node(node_id).masks.get(ctx.task_id, {}).items():
            taken[node_id, name] = mask
    return node_data.without_masks(graph, ctx.task_id, stack_nodes(graph, ctx)), taken


def retraining(
    graph: ModuleGraph,
    ctx: TaskContext,
    mask: MaskSettings | None,
    start: Mapping[MaskKey, torch.Tensor] | None = None,
) -> Training:
    """The candidate's training (its `Training`): the task's kept weights (FREE ones held at zero), with
    its picking mask resumed from `start` when the method picks."""
    train_masks = {
        node_id: {name: owners == ctx.task_id for name, owners in graph.node(node_id).owners.items()}
        for node_id in stack_nodes(graph, ctx)
    }
    picked = picking(graph, ctx, mask, train_masks, start) if mask is not None else None
    return picked or Training(train_masks=train_masks)


# ---- what the record shows -------------------------------------------------------------------------------
def _layer_owners(graph: ModuleGraph, node_ids: list[str]) -> torch.Tensor:
    return torch.cat(
        [graph.node(n).owners[p].flatten() for n in node_ids for p in matrix_parameters(graph, n)]
    )


def _layer_masks(graph: ModuleGraph, node_ids: list[str], task: int) -> torch.Tensor:
    """The task's masks of the layer's weight matrices, in `_layer_owners`' order (1 where it has none)."""
    parts = []
    for node_id in node_ids:
        node = graph.node(node_id)
        for name in matrix_parameters(graph, node_id):
            full = torch.ones_like(node.owners[name], dtype=torch.bool)
            parts.append(node.masks.get(task, {}).get(name, full).flatten())
    return torch.cat(parts)


def capacity(graph: ModuleGraph, ctx: TaskContext) -> list[dict[str, Any]]:
    """Per layer of the stack (weight matrices of all its groups): its width, the share the task owns, the
    share of earlier tasks' weights its mask uses (when it has one), the share still free."""
    t, layers = ctx.task_id, []
    for layer, width in enumerate(stack.widths(graph, PREFIX, len(ctx.specs))):
        node_ids = stack.groups(graph, PREFIX, layer)
        owners = _layer_owners(graph, node_ids)
        entry: dict[str, Any] = {
            "layer": layer,
            "width": width,
            "groups": len(node_ids),
            "owned": float((owners == t).float().mean()),
            "free": float((owners == FREE).float().mean()),
        }
        if any(t in graph.node(n).masks for n in node_ids):
            mask = _layer_masks(graph, node_ids, t)
            old = (owners >= 0) & (owners < t)
            entry["picked"] = int((mask & old).sum()) / max(1, int(old.sum()))
        layers.append(entry)
    return layers


def capacity_used(graph: ModuleGraph, ctx: TaskContext) -> float:
    """The share of the stack's owner-tracked entries (weights and biases) the task owns."""
    owners = torch.cat([o.flatten() for n in stack_nodes(graph, ctx) for o in graph.node(n).owners.values()])
    return float((owners == ctx.task_id).float().mean())


def stage_record(stages: list[Stage], prunable: Entries) -> list[dict[str, float]]:
    return [
        {
            "sparsity": s.sparsity,
            "pruned": pruned_fraction(prunable, s.pruned),
            "val_accuracy": s.val_accuracy,
        }
        for s in stages
    ]


def must_prune_ratio(ctx: TaskContext) -> float:
    """The authors' sparsity when the network is at its widest and even the unpruned model misses the goal:
    leave room for the remaining tasks (1 - round(1 / (remaining + 1), 1))."""
    remaining = max(0, ctx.n_tasks - ctx.task_id - 1)
    return 1.0 - round(1.0 / (remaining + 1), 1)
