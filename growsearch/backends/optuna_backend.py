"""The embedded backend: trials run in this process through `Study.optimize`.

A trial that raises TrainingError (a NaN loss) is recorded as failed with its message and the compute it
spent, and the search goes on; a pruned trial records its compute too. The controller refuses to commit a
task where no trial completed.
"""

from __future__ import annotations

import optuna

from growsearch.errors import TrainingError
from growsearch.search.backend import TaskTrials
from growsearch.train.trainer import EpochStats, count_macs
from growsearch.trial_record import failure_attrs, stopped_attrs, write_attrs


class OptunaBackend:
    name = "optuna"

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = n_jobs

    def run_trials(self, trials: TaskTrials) -> None:
        job = trials.job

        def objective(trial: optuna.Trial) -> float | list[float]:
            def on_epoch(stats: EpochStats) -> None:
                trials.on_epoch(trial.number, stats)
                if trials.multi_objective:
                    return  # Optuna reports and prunes single-objective trials only
                trial.report(stats.val_accuracy, stats.epoch)
                if trials.early_stopping and trial.should_prune():
                    raise optuna.TrialPruned(
                        f"pruned after epoch {stats.epoch + 1} at accuracy {stats.val_accuracy:.4f}"
                    )

            decisions = job.decide(trial)
            with count_macs() as spent:
                try:
                    outcome = job.run(decisions, trial.number, job.seed_number(trial), on_epoch)
                except TrainingError as error:
                    write_attrs(trial, failure_attrs(str(error), spent.macs))
                    raise
                except optuna.TrialPruned:
                    write_attrs(trial, stopped_attrs(spent.macs))
                    raise
            write_attrs(trial, outcome.record.to_attrs())
            trials.save_trial(job.task_id, trial.number, outcome.graph)
            return outcome.values if trials.multi_objective else outcome.accuracy

        trials.study.optimize(
            objective,
            n_trials=trials.n_trials,
            n_jobs=self.n_jobs,
            catch=(TrainingError,),
            callbacks=[trials.on_trial],
        )

    def close(self) -> None:
        pass
