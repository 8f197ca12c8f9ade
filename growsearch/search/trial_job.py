"""One task's trial, as a self-contained job: what a backend runs, in this process or on a Ray worker.

A `TrialJob` holds the method, the task context (data and committed graph), the run seed and the search's
objectives; it is small enough to ship once to the Ray object store. `decide` samples a trial's decisions on
an Optuna trial (all a Ray driver does); `run` builds the candidate from decisions, trains it with the one
trainer, and returns the trained graph, the trial's record and the values the study is told (computed
here, once, for every backend).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import optuna
import torch

from growsearch.config.space import Objective
from growsearch.errors import TrainingError
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods.base import Decisions, Method, TaskContext
from growsearch.seeds import derived_seed
from growsearch.train.candidate import NO_PLAN, train_candidate
from growsearch.train.trainer import EpochCallback, count_macs
from growsearch.trial_record import TrialRecord, retry_of


@dataclass(frozen=True)
class TrialOutcome:
    graph: ModuleGraph  # the trained candidate
    record: TrialRecord
    values: list[float]  # what the study is told: [accuracy, cost, ...] in the order of the objectives

    @property
    def accuracy(self) -> float:
        return self.values[0]


@dataclass(frozen=True)
class TrialJob:
    method: Method
    ctx: TaskContext
    run_seed: int
    objectives: tuple[Objective, ...] = ("accuracy",)

    @property
    def task_id(self) -> int:
        return self.ctx.task_id

    def seed_number(self, trial: optuna.Trial) -> int:
        """The trial's position in an uninterrupted search: a retried trial takes the position (and so the
        seed) of the one that was killed, and a fresh trial after retries does not count them."""
        original = retry_of(trial)
        if original is not None:
            return original
        earlier = trial.study.get_trials(deepcopy=False)
        return trial.number - sum(1 for t in earlier if t.number < trial.number and retry_of(t) is not None)

    def decide(self, trial: optuna.Trial) -> Decisions:
        """The method's decisions for `trial`, sampled define-by-run (a Ray driver does only this)."""
        return self.method.decide(trial, self.ctx)

    def run(
        self, decisions: Decisions, number: int, seed_number: int, on_epoch: EpochCallback | None = None
    ) -> TrialOutcome:
        """Build the candidate these decisions grow, train it, and measure it. A training failure (a NaN
        loss) raises a TrainingError naming the task and the trial."""
        seed = derived_seed(self.run_seed, self.task_id, seed_number)
        torch.manual_seed(seed)
        task = self.ctx.task
        try:
            with count_macs() as building:
                candidate = self.method.build(decisions, self.ctx)
            plan = self.method.training_plan(candidate, self.ctx)
            result = train_candidate(
                candidate.graph,
                self.task_id,
                task.train,
                task.val,
                self.method.space.training,
                seed=seed,
                on_epoch=on_epoch,
                plan=plan or NO_PLAN,
            )
        except TrainingError as error:
            raise TrainingError(f"task {self.task_id}, trial {number}: {error}") from None
        view = candidate.graph.view(self.task_id)
        record = TrialRecord(
            decisions=candidate.decisions,
            mechanism=candidate.mechanism_record(),
            added_parameters=candidate.graph.n_parameters() - self.ctx.committed.n_parameters(),
            view_parameters=candidate.graph.view_parameters(self.task_id),
            forward_macs=candidate.graph.macs(view),
            search_macs=building.macs,
            train_macs=result.train_macs,
            train_seconds=result.seconds,
            curve=[epoch.to_json() for epoch in result.epochs],
            capacity_used=self.method.capacity_used(
                result.graph, dataclasses.replace(self.ctx, decisions=dict(candidate.decisions))
            ),
        )
        values = [result.val_accuracy, *(float(getattr(record, name)) for name in self.objectives[1:])]
        return TrialOutcome(result.graph, record, values)
