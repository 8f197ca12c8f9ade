"""What a backend is handed (one task's trials to run), and the one path from a trial's result to the study.

A backend only schedules: it asks the study for trials (`next_trials`), has a `TrialJob` build and train
them where it runs them, and hands each result back here. `report_of` keeps the trained candidate (the run
folder's trials/T/N/) and says what the study is told, as a `TrialReport` small enough to travel from a
Ray worker as JSON; `tell` writes the report's attributes on the trial and tells the study. A trial whose
process or node was lost is told without a report: failed with no error of its own, so the pipeline retries
it on resume.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from growsearch.graph.module_graph import ModuleGraph
from growsearch.journal_writes import together
from growsearch.search.halving import SuccessiveHalving
from growsearch.search.trial_job import TrialFailure, TrialJob, TrialOutcome
from growsearch.train.trainer import EpochStats
from growsearch.trial_record import (
    ERROR,
    PackLayout,
    failure_attrs,
    next_pack,
    pack_attrs,
    pack_layout_attrs,
    stopped_attrs,
    write_attrs,
)

TrialCallback = Callable[[optuna.Study, FrozenTrial], None]
EpochReport = Callable[[int, EpochStats], None]  # (trial number, what one epoch of it did)


class SaveTrial(Protocol):
    """Keeps a trained candidate (the run folder's trials/T/N/); picklable, so a Ray worker calls it."""

    def __call__(self, task: int, number: int, graph: ModuleGraph) -> object: ...


@dataclass(frozen=True)
class TaskTrials:
    """`n_trials` more trials of `job` in `study`. Each trained candidate is kept with `save_trial`;
    `on_trial` is called after each trial is told, `on_epoch` after each of its epochs (in this process,
    whichever backend trains it). With `early_stopping` a backend stops losing trials after an epoch
    (Optuna's pruner, or Ray's ASHA scheduler), a single-objective search only; with `halving` a trial stops
    at a rung where it ranks below the top 1/eta on every objective (`search.halving`; packs too). With
    `pack` > 1 a backend asks the study for that many trials at a time and trains them as one pack
    (`TrialJob.run_pack`)."""

    study: optuna.Study
    job: TrialJob
    n_trials: int
    save_trial: SaveTrial
    on_trial: TrialCallback
    on_epoch: EpochReport = lambda number, stats: None  # noqa: E731
    early_stopping: bool = False
    pack: int = 1  # trials trained together (`search.pack`); 1: one at a time
    max_padding: float | None = None  # a pack whose padding multiplies compute by more trains one by one
    halving: SuccessiveHalving | None = None  # `search.fidelity: halving`: the task's rungs so far

    @property
    def multi_objective(self) -> bool:
        return len(self.job.objectives) > 1

    @property
    def epochs(self) -> int:
        """Epochs a trial trains (the YAML's `training.epochs`, the one road every trainer takes)."""
        return self.job.training.epochs


class Backend(Protocol):
    """Where a task's trials run."""

    def run_trials(self, trials: TaskTrials) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TrialReport:
    """What the study is told of a trial: completed (with its values), stopped by a pruner or a scheduler,
    failed on its own (a NaN loss: its error is among `attrs`), or interrupted (its worker lost: failed
    without an error of its own, retried on resume; `attrs` the compute its last report carried).
    JSON-able, so a Ray worker sends it."""

    state: Literal["complete", "pruned", "failed", "interrupted"]
    attrs: dict[str, Any] = field(default_factory=dict)
    values: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "attrs": self.attrs, "values": self.values}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialReport:
        return cls(data["state"], dict(data["attrs"]), data.get("values"))


def report_of(
    save_trial: SaveTrial,
    task: int,
    number: int,
    result: TrialOutcome | TrialFailure,
    where: dict[str, Any] | None = None,
) -> TrialReport:
    """Keep a trained candidate (trial `number` of `task`) and say what the study is told of it (`where`:
    attributes kept with it besides its record: the Ray worker it ran on, its successive-halving rungs)."""
    where = where or {}
    if isinstance(result, TrialFailure):
        if isinstance(result.error, optuna.TrialPruned):
            return TrialReport("pruned", {**stopped_attrs(result.spent_macs), **where})
        return TrialReport("failed", {**failure_attrs(str(result.error), result.spent_macs), **where})
    save_trial(task, number, result.graph)
    return TrialReport("complete", {**result.record.to_attrs(), **where}, list(result.values))


def tell(trials: TaskTrials, trial: optuna.Trial, report: TrialReport | None) -> FrozenTrial:
    """Record `report` on `trial` and tell the study, then call `on_trial` with the finished trial. None,
    or an "interrupted" report: the trial was interrupted (Ctrl-C, a killed process, a lost node), failed
    without an error of its own and not passed to `on_trial`."""
    frozen = _record(trials, trial, report)
    if report is not None and report.state != "interrupted":
        trials.on_trial(trials.study, frozen)
    return frozen


def tell_each(
    trials: TaskTrials,
    reports: Iterable[tuple[optuna.Trial, TrialReport]],
    told: set[int],
    layout: PackLayout | None = None,
) -> None:
    """`tell` each trial its report, as `reports` yields them (a pack's, each kept as it is reported), after
    the pack's `layout` on its first trial (`record_layout`): all of it reaches the journal in one append,
    then `on_trial` is called for each. When `reports` raises midway (Ctrl-C while a trial is kept), what
    was told is written all the same; `told` holds the numbers of the trials told, so the caller can tell
    the rest they were interrupted."""
    finished: list[optuna.Trial] = []
    try:
        with together():  # nothing reads a trial's attributes or state back until its tell is written
            for place, (trial, report) in enumerate(reports):
                if place == 0:  # the layout goes before any tell
                    record_layout(trial, layout)
                _record(trials, trial, report)
                told.add(trial.number)
                if report.state != "interrupted":
                    finished.append(trial)
    finally:
        if finished:
            by_number = {t.number: t for t in trials.study.get_trials(deepcopy=False)}
            for trial in finished:
                trials.on_trial(trials.study, copy.deepcopy(by_number[trial.number]))


def _record(trials: TaskTrials, trial: optuna.Trial, report: TrialReport | None) -> FrozenTrial:
    """`report`'s attributes on `trial`, and its state told to the study (the finished trial, as the
    storage holds it: inside `together()`, before the block's writes)."""
    study = trials.study
    if report is None or report.state == "interrupted":
        if report is not None:
            write_attrs(trial, report.attrs)
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    write_attrs(trial, report.attrs)
    if report.state == "complete":
        assert report.values is not None
        return study.tell(trial, report.values if trials.multi_objective else report.values[0])
    if report.state == "pruned":
        return study.tell(trial, state=TrialState.PRUNED)
    message = report.attrs.get(ERROR)
    optuna.logging.get_logger("optuna").warning(f"Trial {trial.number} failed: {message}")
    return study.tell(trial, state=TrialState.FAIL)


def next_trials(trials: TaskTrials, remaining: int) -> tuple[list[optuna.Trial], list[dict[str, Any]] | None]:
    """Ask the study for the next trials to train together (one, or a pack: `next_pack` keeps the retries
    of an interrupted pack together, in the layout it recorded), and the layout they train in."""
    study = trials.study
    size, layout = 1, None
    if trials.pack > 1:
        size, layout = next_pack(study.get_trials(deepcopy=False), min(trials.pack, remaining))
    with warnings.catch_warnings():
        # SQLite's heartbeats serve Study.optimize; asking needs none: the pipeline fails what a killed
        # process left RUNNING, holding the run folder's lock
        warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
        asked = [study.ask() for _ in range(size)]
    if trials.pack > 1:  # a sampler that learns per pack (REINFORCE) reads which trials it held
        with together():
            for trial in asked:
                write_attrs(trial, pack_attrs(asked[0].number, len(asked), trial.number))
    return asked, layout


def record_layout(trial: optuna.Trial, layout: PackLayout | None) -> None:
    """On a pack's first trial, before any is told: the template it trained in, or each trial's where it
    trained as smaller packs (a resume retrains the rest of the pack in it)."""
    if layout is not None:
        write_attrs(trial, pack_layout_attrs(layout))
