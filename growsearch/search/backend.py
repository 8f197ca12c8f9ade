"""What a backend is handed: one task's trials to run, with everything they need (see growsearch.backends)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import optuna

from growsearch.graph.module_graph import ModuleGraph
from growsearch.search.trial_job import TrialJob
from growsearch.train.trainer import EpochStats

TrialCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
EpochReport = Callable[[int, EpochStats], None]  # (trial number, what one epoch of it did)


class SaveTrial(Protocol):
    """Keeps a trained candidate (the run folder's trials/T/N/); picklable, so a Ray worker calls it."""

    def __call__(self, task: int, number: int, graph: ModuleGraph) -> object: ...


@dataclass(frozen=True)
class TaskTrials:
    """`n_trials` more trials of `job` in `study`. Each trained candidate is kept with `save_trial`;
    `on_trial` is called after each trial finishes, `on_epoch` after each of its epochs (in this process,
    whichever backend trains it). With `early_stopping` a backend stops losing trials after an epoch
    (Optuna's pruner, or Ray's ASHA scheduler), a single-objective search only. With `pack` > 1 a backend
    asks the study for that many trials at a time and trains them as one pack (`TrialJob.run_pack`)."""

    study: optuna.Study
    job: TrialJob
    n_trials: int
    epochs: int
    save_trial: SaveTrial
    on_trial: TrialCallback
    on_epoch: EpochReport = lambda number, stats: None  # noqa: E731
    early_stopping: bool = False
    pack: int = 1  # trials trained together (`search.pack`); 1: one at a time
    max_padding: float | None = None  # a pack whose padding multiplies compute by more trains one by one

    @property
    def multi_objective(self) -> bool:
        return len(self.job.objectives) > 1


class Backend(Protocol):
    """Where a task's trials run."""

    def run_trials(self, trials: TaskTrials) -> None: ...

    def close(self) -> None: ...
