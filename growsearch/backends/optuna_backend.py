"""The embedded backend: trials run in this process through `Study.optimize`.

A trial that raises TrainingError (a NaN loss) is recorded as failed with its message and the search
goes on; the controller refuses to commit a task where no trial completed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import optuna

from growsearch.errors import TrainingError
from growsearch.search.trial_job import SaveTrial, TrialJob

Callback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class OptunaBackend:
    name = "optuna"

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = n_jobs

    def optimize(
        self,
        study: optuna.Study,
        job: TrialJob,
        n_trials: int,
        save_trial: SaveTrial,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        objectives = job.method.space.search.objectives

        def objective(trial: optuna.Trial) -> float | list[float]:
            def on_epoch(epoch: int, accuracy: float) -> None:
                if len(objectives) > 1:
                    return  # Optuna reports and prunes single-objective trials only
                trial.report(accuracy, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} at accuracy {accuracy:.4f}")

            try:
                outcome = job.run(trial, job.seed_number(trial), on_epoch)
            except TrainingError as error:
                trial.set_user_attr("error", str(error))
                raise
            for key, value in outcome.attrs.items():
                trial.set_user_attr(key, value)
            save_trial(job.task_id, trial.number, outcome.graph)
            return outcome.values(objectives)

        study.optimize(
            objective,
            n_trials=n_trials,
            n_jobs=self.n_jobs,
            catch=(TrainingError,),
            callbacks=list(callbacks),
        )
