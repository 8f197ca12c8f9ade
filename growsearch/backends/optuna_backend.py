"""The embedded backend: trials run in this process through `Study.optimize`.

A trial that raises TrainingError (a NaN loss) is recorded as failed and the search goes on; the
controller refuses to commit a task where no trial completed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import optuna

from growsearch.errors import TrainingError

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class OptunaBackend:
    def __init__(self, n_jobs: int = 1):
        self.n_jobs = n_jobs

    def optimize(
        self,
        study: optuna.Study,
        objective: Callable[[optuna.Trial], float],
        n_trials: int,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        study.optimize(
            objective,
            n_trials=n_trials,
            n_jobs=self.n_jobs,
            catch=(TrainingError,),
            callbacks=list(callbacks),
        )
