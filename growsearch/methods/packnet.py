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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from growsearch.config.schema import require
from growsearch.graph.module_graph import FREE, ModuleGraph
from growsearch.grow import operators as ops
from growsearch.methods.base import Candidate, Decisions, Method, Retrain, TaskContext

PREFIX = "shared"
SHARED = PREFIX + "/L{}"


@dataclass(frozen=True)
class PackNetOptions:
    prune_fractions: tuple[float, ...] = (0.5, 0.75)  # task t uses entry min(t, len - 1)
    retrain_epochs: int = 2
    retrain_lr_scale: float = 0.1
    prune_last_task: bool = False  # the authors' schedule: the last task of the stream is not pruned

    def validate(self, where: str) -> None:
        require(len(self.prune_fractions) >= 1, f"{where}.prune_fractions", "expected at least one fraction")
        for f in self.prune_fractions:
            require(0 <= f < 1, f"{where}.prune_fractions", f"expected fractions in [0, 1), got {f}")
        require(self.retrain_epochs >= 0, f"{where}.retrain_epochs", "expected an integer >= 0")
        require(self.retrain_lr_scale > 0, f"{where}.retrain_lr_scale", "expected a number > 0")

    def fraction(self, task: int) -> float:
        return self.prune_fractions[min(task, len(self.prune_fractions) - 1)]


class PackNet(Method):
    name = "packnet"
    paper = "Mallya & Lazebnik 2018, PackNet: Adding Multiple Tasks to a Single Network by Iterative Pruning"
    scenarios = ("task-il",)
    Options = PackNetOptions

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id)
        return Candidate(ops.add_head(graph, ctx.task_id, SHARED.format(len(ctx.specs) - 1), ctx.n_outputs))

    def pruned_fraction(self, ctx: TaskContext) -> float:
        return 0.0 if ctx.is_last and not self.options.prune_last_task else self.options.fraction(ctx.task_id)

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        shared = [SHARED.format(i) for i in range(len(ctx.specs))]
        fraction = self.pruned_fraction(ctx)
        if fraction == 0.0:  # nothing pruned: the task keeps every free weight, nothing to retrain
            return ops.freeze(ops.claim_free(chosen, ctx.task_id, shared), [chosen.head(ctx.task_id)])
        graph = ops.prune(chosen, ctx.task_id, fraction, shared)
        graph = ops.claim_free(graph, ctx.task_id, shared, params=_one_dimensional(graph, shared))
        if self.options.retrain_epochs > 0:
            graph = retrain(graph, self.options.retrain_epochs, ctx.task_id, self.options.retrain_lr_scale)
        return ops.freeze(graph, [graph.head(ctx.task_id)])

    def commit_record(self, committed: ModuleGraph, ctx: TaskContext) -> dict[str, Any]:
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
        return {"pruned_fraction": self.pruned_fraction(ctx), "capacity": layers}


def _one_dimensional(graph: ModuleGraph, node_ids: list[str]) -> set[str]:
    return {name for n in node_ids for name, w in graph.node(n).weights.items() if w.dim() == 1}
