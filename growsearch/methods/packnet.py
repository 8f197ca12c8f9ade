"""PackNet: adding multiple tasks to a single network by iterative pruning (Mallya & Lazebnik, CVPR 2018).

One shared network; every weight is owned by at most one task. For task t: train the free weights (old
tasks' weights are used but fixed), prune the lowest-magnitude fraction of the weights t trained (per
layer), retrain the kept ones briefly with the pruned ones held at zero, then they belong to t. Task t's
inference uses the weights owned by tasks <= t, so an old task's outputs are bit-identical after later
tasks. Biases are trained with the first task only and then fixed, as in the paper's code. Each task
has its own head. A degenerate search space (one candidate); task-IL only.

Paper defaults: prune 50% or 75% per round (its two settings; here 0.5 for the first task, then 0.75),
retraining after each pruning (`retrain_epochs`) at a tenth of the learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from growsearch.config.schema import require
from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow import operators as ops
from growsearch.methods.base import Candidate, Decisions, Method, Retrain, TaskContext

PREFIX = "shared"
SHARED = PREFIX + "/L{}"


@dataclass(frozen=True)
class PackNetOptions:
    prune_fractions: tuple[float, ...] = (0.5, 0.75)  # task t uses entry min(t, len - 1)
    retrain_epochs: int = 2
    retrain_lr_scale: float = 0.1

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

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        shared = [SHARED.format(i) for i in range(len(ctx.specs))]
        graph = ops.prune(chosen, ctx.task_id, self.options.fraction(ctx.task_id), shared)
        graph = ops.claim_free(graph, ctx.task_id, shared, params=_one_dimensional(graph, shared))
        if self.options.retrain_epochs > 0:
            graph = retrain(graph, self.options.retrain_epochs, ctx.task_id, self.options.retrain_lr_scale)
        return ops.freeze(graph, [graph.head(ctx.task_id)])


def _one_dimensional(graph: ModuleGraph, node_ids: list[str]) -> set[str]:
    return {name for n in node_ids for name, w in graph.node(n).weights.items() if w.dim() == 1}
