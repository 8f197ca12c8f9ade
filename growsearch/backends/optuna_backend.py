"""The embedded backend: trials run in this process, one at a time through `Study.optimize`, or in packs.

A trial that raises TrainingError (a NaN loss) is recorded as failed with its message and the compute it
spent, and the search goes on; a pruned trial records its compute too. The controller refuses to commit a
task where no trial completed.

With `pack` > 1 the study is asked for that many trials (ask-and-tell), their candidates train together
(`TrialJob.run_pack`), and each is told its own result. A process killed or interrupted mid-pack leaves
the pack's untold trials failed without an error of their own: the controller retries each with its
decisions and seed on resume.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from growsearch.errors import TrainingError
from growsearch.search.backend import TaskTrials
from growsearch.search.trial_job import TrialFailure, TrialOutcome
from growsearch.train.trainer import EpochStats, count_macs
from growsearch.trial_record import (
    failure_attrs,
    next_pack,
    pack_attrs,
    pack_layout_attrs,
    stopped_attrs,
    write_attrs,
)


def epoch_reporter(trials: TaskTrials, trial: optuna.Trial) -> Callable[[EpochStats], None]:
    """What a trial does after each epoch: log it, report it to Optuna, and stop when the pruner says so."""

    def on_epoch(stats: EpochStats) -> None:
        trials.on_epoch(trial.number, stats)
        if trials.multi_objective:
            return  # Optuna reports and prunes single-objective trials only
        trial.report(stats.val_accuracy, stats.epoch)
        if trials.early_stopping and trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after epoch {stats.epoch + 1} at accuracy {stats.val_accuracy:.4f}"
            )

    return on_epoch


class OptunaBackend:
    name = "optuna"

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = n_jobs

    def run_trials(self, trials: TaskTrials) -> None:
        if trials.pack > 1:
            self._run_packs(trials)
            return
        job = trials.job

        def objective(trial: optuna.Trial) -> float | list[float]:
            decisions = job.decide(trial)
            with count_macs() as spent:
                try:
                    outcome = job.run(
                        decisions, trial.number, job.seed_number(trial), epoch_reporter(trials, trial)
                    )
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

    def _run_packs(self, trials: TaskTrials) -> None:
        study, job = trials.study, trials.job
        remaining = trials.n_trials
        while remaining > 0:
            size, layout = next_pack(study.get_trials(deepcopy=False), min(trials.pack, remaining))
            with warnings.catch_warnings():
                # SQLite's heartbeats serve Study.optimize; a packed search needs none: the controller
                # fails what a killed process left RUNNING, holding the run folder's lock
                warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
                asked = [study.ask() for _ in range(size)]
            told: set[int] = set()
            try:
                for trial in asked:  # a sampler that learns per pack (REINFORCE) reads which trials it held
                    write_attrs(trial, pack_attrs(asked[0].number))
                decisions = [job.decide(trial) for trial in asked]
                pack = job.run_pack(
                    decisions,
                    [trial.number for trial in asked],
                    [job.seed_number(trial) for trial in asked],
                    [epoch_reporter(trials, trial) for trial in asked],
                    layout,
                    trials.max_padding,
                )
                if pack.layout is not None:  # before any is told: a resume retrains the rest in it
                    write_attrs(asked[0], pack_layout_attrs(pack.layout))
                for trial, result in zip(asked, pack.results, strict=True):
                    finished = self._tell(trials, trial, result)
                    told.add(trial.number)
                    trials.on_trial(study, finished)
            except BaseException:  # Ctrl-C, or a bug: the pack's untold trials are interrupted, not lost
                for trial in asked:
                    if trial.number not in told:
                        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
            remaining -= len(asked)

    def _tell(
        self, trials: TaskTrials, trial: optuna.Trial, result: TrialOutcome | TrialFailure
    ) -> optuna.trial.FrozenTrial:
        study = trials.study
        if isinstance(result, TrialFailure):
            if isinstance(result.error, optuna.TrialPruned):
                write_attrs(trial, stopped_attrs(result.spent_macs))
                return study.tell(trial, state=TrialState.PRUNED)
            write_attrs(trial, failure_attrs(str(result.error), result.spent_macs))
            optuna.logging.get_logger("optuna").warning(f"Trial {trial.number} failed: {result.error}")
            return study.tell(trial, state=TrialState.FAIL)
        write_attrs(trial, result.record.to_attrs())
        trials.save_trial(trials.job.task_id, trial.number, result.graph)
        return study.tell(trial, result.values if trials.multi_objective else result.accuracy)

    def close(self) -> None:
        pass
