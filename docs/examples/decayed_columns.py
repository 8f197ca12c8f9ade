"""The smallest complete method, as docs/architecture.md's method contract shows it: a new column per task
(no laterals), trained with an L2 pull on its weights whose strength each trial decides. A toy, not a
method of the survey; `tests/methods/test_method_contract_example.py` runs it end to end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import torch

from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    Method,
    ModuleGraph,
    TaskContext,
    Training,
    TrainingRun,
    ops,
    require,
)


@dataclass(frozen=True)
class DecayedColumnsOptions:
    l2_range: tuple[float, float] = (1e-5, 1e-2)  # the YAML's `options:` section, checked on load

    def validate(self, where: str) -> None:
        low, high = self.l2_range
        require(0 < low <= high, f"{where}.l2_range", "expected [low, high] with 0 < low <= high")


class DecayedColumns(Method):
    name = "decayed-columns"
    paper = "an example of the method contract (docs/architecture.md)"
    scenarios = ("task-il",)
    Options = DecayedColumnsOptions

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        return {"l2": trial.suggest_float("l2", *self.options.l2_range, log=True)}

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        graph = ops.add_column(ctx.committed, ctx.task_id, ctx.specs, ctx.n_outputs, laterals=False)
        l2, trained = float(decisions["l2"]), []

        def start(run: TrainingRun) -> None:  # the compiled candidate's trainable weights
            trained[:] = [p for p in run.program.suffix.parameters() if p.requires_grad]

        def penalty() -> torch.Tensor:
            return l2 * sum((w**2).sum() for w in trained)

        return Candidate(graph, decisions, training=Training(start=start, penalty=penalty))

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        column = [n for n, node in committed.nodes() if node.owner == ctx.task_id]
        return {"column_parameters": committed.n_parameters(column)}
