"""PackNet: adding multiple tasks to a single network by iterative pruning (Mallya & Lazebnik, CVPR 2018).

One shared network; every weight is owned by at most one task. For task t: train the free weights (old
tasks' weights are used but fixed), prune the lowest-magnitude fraction of the weights t trained (per
layer), retrain the kept ones briefly with the pruned ones held at zero, then they belong to t. Task t's
inference uses the weights owned by tasks <= t, so an old task's outputs are bit-identical after later
tasks. Biases are trained with the first task only and then fixed, as in the paper's code. Each task
has its own head. A degenerate search space (one candidate); task-IL only.

Paper defaults: prune 50% or 75% per round (its two settings; here 0.5 for the first task, then 0.75),
retraining after each pruning (`retrain_epochs`) at a tenth of the learning rate. The authors' sequence
script leaves the last task of a sequence unpruned (`run_all_sequence.sh`: fractions `0.75,0.75,-1`): with
`prune_last_task: false` (the default) the stream's last task keeps every free weight it trained.
With `search: true` each task searches its prune fraction (Optuna, `prune_fraction_range`), single- or
multi-objective against `capacity_used` (the share of the shared weights the task claims).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from growsearch.methods.toolkit import (
    FREE,
    Candidate,
    Decisions,
    Method,
    ModuleGraph,
    Retrain,
    TaskContext,
    node_data,
    ops,
    require,
)

PREFIX = "shared"
SHARED = PREFIX + "/L{}"


@dataclass(frozen=True)
class PackNetOptions:
    prune_fractions: tuple[float, ...] = (0.5, 0.75)  # task t uses entry min(t, len - 1)
    retrain_epochs: int = 2
    retrain_lr_scale: float = 0.1
    prune_last_task: bool = False  # the authors' schedule: the last task of the stream is not pruned
    search: bool = False  # true: each task searches its prune fraction (against capacity_used, say)
    prune_fraction_range: tuple[float, float] = (0.3, 0.95)

    def validate(self, where: str) -> None:
        require(len(self.prune_fractions) >= 1, f"{where}.prune_fractions", "expected at least one fraction")
        for f in self.prune_fractions:
            require(0 <= f < 1, f"{where}.prune_fractions", f"expected fractions in [0, 1), got {f}")
        require(self.retrain_epochs >= 0, f"{where}.retrain_epochs", "expected an integer >= 0")
        require(self.retrain_lr_scale > 0, f"{where}.retrain_lr_scale", "expected a number > 0")
        low, high = self.prune_fraction_range
        require(0 <= low <= high < 1, f"{where}.prune_fraction_range", "expected [low, high] within [0, 1)")

    def fraction(self, task: int) -> float:
        return self.prune_fractions[min(task, len(self.prune_fractions) - 1)]


class PackNet(Method):
    name = "packnet"
    paper = "Mallya & Lazebnik 2018, PackNet: Adding Multiple Tasks to a Single Network by Iterative Pruning"
    scenarios = ("task-il",)
    Options = PackNetOptions

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {"prune_fraction": trial.suggest_float("prune_fraction", *self.options.prune_fraction_range)}

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id)
        if ctx.task_id > 0:  # batch norm per task, as the paper's networks keep it (no-op without norm)
            graph = node_data.with_task_norms(graph, ctx.task_id, self.shared(ctx))
        graph = ops.add_head(graph, ctx.task_id, SHARED.format(len(ctx.specs) - 1), ctx.n_outputs)
        return Candidate(graph, decisions={"prune_fraction": self.pruned_fraction(ctx, decisions)})

    def shared(self, ctx: TaskContext) -> list[str]:
        return [SHARED.format(i) for i in range(len(ctx.specs))]

    def pruned_fraction(self, ctx: TaskContext, decisions: Decisions | None = None) -> float:
        """The fraction of its free weights task t prunes: searched, or the schedule's (the stream's last
        task keeps them all unless `prune_last_task`)."""
        if decisions and "prune_fraction" in decisions:
            return float(decisions["prune_fraction"])
        if ctx.is_last and not self.options.prune_last_task:
            return 0.0
        return self.options.fraction(ctx.task_id)

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float:
        """The share of the shared weights the task claims. Measured on the trained candidate, before the
        commit prunes: the schedule's (or the decision's) fraction says what the task will keep."""
        owners = [o for i in range(len(ctx.specs)) for o in graph.node(SHARED.format(i)).owners.values()]
        free = sum(int((o == FREE).sum()) for o in owners)
        total = sum(o.numel() for o in owners)
        return free * (1 - self.pruned_fraction(ctx, ctx.decisions)) / max(total, 1)

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        shared = [SHARED.format(i) for i in range(len(ctx.specs))]
        fraction = self.pruned_fraction(ctx, ctx.decisions)
        if fraction == 0.0:  # nothing pruned: the task keeps every free weight, nothing to retrain
            return ops.freeze(ops.claim_free(chosen, ctx.task_id, shared), [chosen.head(ctx.task_id)])
        graph = ops.prune(chosen, ctx.task_id, fraction, shared)
        graph = ops.claim_free(graph, ctx.task_id, shared, params=_one_dimensional(graph, shared))
        if self.options.retrain_epochs > 0:
            graph = retrain(graph, self.options.retrain_epochs, ctx.task_id, self.options.retrain_lr_scale)
        return ops.freeze(graph, [graph.head(ctx.task_id)])

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per shared layer's weight matrix: the share this task keeps, and the share still free for later
        tasks; and the fraction of what the task trained that was pruned."""
        layers = []
        for i in range(len(ctx.specs)):
            node = committed.node(SHARED.format(i))
            for owners in node.owners.values():
                if owners.dim() >= 2:
                    total = owners.numel()
                    owned, free = int((owners == ctx.task_id).sum()), int((owners == FREE).sum())
                    layers.append({"layer": i, "owned": owned / total, "free": free / total})
        return {"pruned_fraction": self.pruned_fraction(ctx, ctx.decisions), "capacity": layers}


def _one_dimensional(graph: ModuleGraph, node_ids: list[str]) -> set[str]:
    return {name for n in node_ids for name, w in graph.node(n).weights.items() if w.dim() == 1}
