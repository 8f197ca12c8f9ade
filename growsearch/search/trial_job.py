"""One task's trial, as a self-contained job: what a backend runs, in this process or on a Ray worker.

A `TrialJob` holds the method, the task context (data and committed graph) and the run seed; it is
small enough to ship once to the Ray object store. `run` builds the trial's candidate from its
decisions (define-by-run on an Optuna trial, or a `FixedTrial` replaying decisions sampled elsewhere),
trains it, and returns the trained graph with the attributes to record on the trial.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods.base import Method, TaskContext
from growsearch.search.training import EpochCallback, train_candidate

TrialLike = optuna.Trial | optuna.trial.FixedTrial


def derived_seed(*parts: object) -> int:
    """A seed for (run seed, task, trial, ...) that does not depend on the process or its history."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass(frozen=True)
class TrialOutcome:
    graph: ModuleGraph
    value: float  # validation accuracy
    attrs: dict[str, Any]

    def values(self, objectives: tuple[str, ...]) -> float | list[float]:
        """What the study is told: the accuracy, or [accuracy, cost, ...] for a multi-objective search."""
        if len(objectives) == 1:
            return self.value
        return [self.value, *(float(self.attrs[name]) for name in objectives[1:])]


@dataclass(frozen=True)
class TrialJob:
    method: Method
    ctx: TaskContext
    run_seed: int

    @property
    def task_id(self) -> int:
        return self.ctx.task_id

    def seed_number(self, trial: optuna.Trial) -> int:
        """The trial's position in an uninterrupted search: a retried trial takes the position (and so the
        seed) of the one that was killed, and a fresh trial after retries does not count them."""
        if "retry_of" in trial.user_attrs:
            return int(trial.user_attrs["retry_of"])
        earlier = trial.study.get_trials(deepcopy=False)
        return trial.number - sum(
            1 for t in earlier if t.number < trial.number and "retry_of" in t.user_attrs
        )

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Run the method's define-by-run space on `trial` for its decisions only (a Ray driver does this)."""
        torch.manual_seed(derived_seed(self.run_seed, self.task_id, self.seed_number(trial)))
        self.method.suggest(trial, self.ctx)
        return dict(trial.params)

    def run(self, trial: TrialLike, seed_number: int, on_epoch: EpochCallback | None = None) -> TrialOutcome:
        seed = derived_seed(self.run_seed, self.task_id, seed_number)
        torch.manual_seed(seed)
        candidate = self.method.candidate(trial, self.ctx)
        view = candidate.view(self.task_id)
        task = self.ctx.task
        result = train_candidate(
            candidate,
            self.task_id,
            task.train,
            task.val,
            self.method.space.training,
            seed=seed,
            on_epoch=on_epoch,
        )
        attrs = {
            **trial.user_attrs,  # what the method recorded (on a Ray worker, a FixedTrial keeps them locally)
            "added_parameters": candidate.n_parameters() - self.ctx.committed.n_parameters(),
            "view_parameters": candidate.n_parameters(view),
            "forward_macs": candidate.macs(view),
            "train_macs": result.train_macs,
            "train_seconds": result.seconds,
        }
        return TrialOutcome(result.graph, result.val_accuracy, attrs)


SaveTrial = Callable[[int, int, ModuleGraph], object]  # (task, trial number, trained graph)
