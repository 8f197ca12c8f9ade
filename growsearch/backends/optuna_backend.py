"""The embedded backend: trials run in this process, one at a time or in packs, by ask-and-tell.

The study is asked for the next trials (one, or a pack); their candidates are built and trained by the
task's `TrialJob` (a pack trains as one computation where it can), and each result goes back to the study
through `search.trials` (`report_of`, `tell`). A trial that fails on its own (a NaN loss) or that a pruner
stops is told so, with the compute it spent, and the search goes on; the pipeline refuses to commit a task
where no trial completed. A process interrupted (Ctrl-C) or killed mid-pack leaves the untold trials failed
without an error of their own: the pipeline retries each with its decisions and seed on resume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import optuna

from growsearch.errors import TrainingError
from growsearch.search.trial_job import TrialFailure, TrialOutcome
from growsearch.search.trials import (
    TaskTrials,
    TrialReport,
    next_trials,
    report_of,
    tell,
    tell_each,
)
from growsearch.train.trainer import EpochStats, count_macs


def epoch_reporter(trials: TaskTrials, trial: optuna.Trial) -> Callable[[EpochStats], None]:
    """What a trial does after each epoch: log it, report it to Optuna, and stop when the pruner says so."""

    def on_epoch(stats: EpochStats) -> None:
        trials.on_epoch(trial.number, stats)
        reason = trials.halving.judge_epoch(trial.number, stats) if trials.halving is not None else None
        if reason is not None:
            raise optuna.TrialPruned(reason)
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

    def run_trials(self, trials: TaskTrials) -> None:
        job, remaining = trials.job, trials.n_trials
        while remaining > 0:
            asked, layout = next_trials(trials, remaining)
            told: set[int] = set()
            try:
                decisions = [job.decide(trial) for trial in asked]
                seeds = [job.seed_number(trial) for trial in asked]
                on_epochs = [epoch_reporter(trials, trial) for trial in asked]
                if trials.pack == 1:
                    results = [_run_alone(trials, decisions[0], asked[0].number, seeds[0], on_epochs[0])]
                else:
                    numbers = [trial.number for trial in asked]
                    pack = job.run_pack(decisions, numbers, seeds, on_epochs, layout, trials.max_padding)
                    results, layout = pack.results, pack.layout
                tell_each(trials, _reports(trials, asked, results), told, layout)
            except BaseException:  # Ctrl-C, or a bug: the untold trials are interrupted, not lost
                for trial in asked:
                    if trial.number not in told:
                        tell(trials, trial, None)
                raise
            remaining -= len(asked)

    def close(self) -> None:
        pass


def _reports(
    trials: TaskTrials, asked: Sequence[optuna.Trial], results: Sequence[TrialOutcome | TrialFailure]
) -> Iterator[tuple[optuna.Trial, TrialReport]]:
    """Each trial's report, its candidate kept in the run folder as it comes (with its halving rungs)."""
    for trial, result in zip(asked, results, strict=True):
        rungs = trials.halving.attrs(trial.number) if trials.halving is not None else None
        yield trial, report_of(trials.save_trial, trials.job.task_id, trial.number, result, rungs)


def _run_alone(
    trials: TaskTrials,
    decisions: dict,
    number: int,
    seed_number: int,
    on_epoch: Callable[[EpochStats], None],
) -> TrialOutcome | TrialFailure:
    """One trial trained alone; a NaN loss or a pruner's stop is its result, with the compute it spent."""
    with count_macs() as spent:
        try:
            return trials.job.run(decisions, number, seed_number, on_epoch)
        except (TrainingError, optuna.TrialPruned) as error:
            return TrialFailure(error, spent.macs)
