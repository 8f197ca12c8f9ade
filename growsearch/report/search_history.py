"""Each task's search read back from the run's Optuna storage, single- or multi-objective.

`task_searches(run)` gives one `TaskSearch` per study `task-T`: the objective names and directions, and
every trial with its state, objective values, sampled decisions, what it recorded (parameters added,
multiply-adds, seconds), whether it was committed, and whether it is on the Pareto front (for a single
objective: whether it is the best trial).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna

from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import TrialRecord, failure, read_record, spent_macs


@dataclass(frozen=True)
class TrialRow:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    values: tuple[float, ...] | None
    params: dict[str, Any]
    record: TrialRecord | None  # what a completed trial built and spent
    error: str | None  # why a trial failed on its own
    spent_macs: int  # compute the trial spent, whatever its end
    chosen: bool
    pareto: bool
    epochs_reported: int  # intermediate values (pruners stop a trial after some of them)


@dataclass(frozen=True)
class TaskSearch:
    task: int
    objectives: tuple[str, ...]
    directions: tuple[str, ...]  # "maximize" / "minimize" per objective
    trials: list[TrialRow] = field(default_factory=list)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def count(self, state: str) -> int:
        return sum(t.state == state for t in self.trials)

    def optuna_disagreement(self) -> str | None:
        """Why Optuna's own tools point at another trial than the one growsearch committed, if they do."""
        chosen = [t.number for t in self.trials if t.chosen]
        best = [t.number for t in self.trials if t.pareto]
        if self.multi_objective or not chosen or not best or chosen == best:
            return None
        return (
            f"task {self.task}: Optuna's best trial (what optuna-dashboard and `optuna best-trial` show) is "
            f"trial {best[0]}, the highest {self.objectives[0]}; growsearch committed trial {chosen[0]} by "
            "its commit rule (a reward, or the smallest candidate within accuracy_tolerance), which the "
            "study's user attribute `committed` records"
        )


def _objective_names(study: optuna.Study, configured: list[str] | None) -> tuple[str, ...]:
    """The study's metric names, else the search space's `objectives`, else objective 0, 1, ..."""
    n = len(study.directions)
    for names in (study.metric_names, configured):
        if names and len(names) == n:
            return tuple(str(name) for name in names)
    return ("objective",) if n == 1 else tuple(f"objective {i}" for i in range(n))


def _front(study: optuna.Study) -> set[int]:
    try:
        if len(study.directions) > 1:
            return {t.number for t in study.best_trials}
        return {study.best_trial.number}
    except ValueError:  # no completed trial yet
        return set()


def task_searches(run: RunFolder) -> list[TaskSearch]:
    """Every task's study, in task order (tasks whose study was never opened are absent)."""
    config = run.config()
    storage = run.storage(config["space"]["search"]["storage"])
    configured = config["space"]["search"].get("objectives")
    chosen = {r.task: r.chosen_trial for r in run.records()}
    searches = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        name = summary.study_name
        if not name.startswith("task-") or not name.removeprefix("task-").isdigit():
            continue
        task = int(name.removeprefix("task-"))
        study = optuna.load_study(study_name=name, storage=storage)
        front = _front(study)
        rows = [
            TrialRow(
                number=trial.number,
                state=trial.state.name,
                values=None if trial.values is None else tuple(float(v) for v in trial.values),
                params=dict(trial.params),
                record=read_record(trial),
                error=failure(trial),
                spent_macs=spent_macs(trial),
                chosen=chosen.get(task) == trial.number,
                pareto=trial.number in front,
                epochs_reported=len(trial.intermediate_values),
            )
            for trial in study.get_trials(deepcopy=False)
        ]
        searches.append(
            TaskSearch(
                task=task,
                objectives=_objective_names(study, configured),
                directions=tuple(d.name.lower() for d in study.directions),
                trials=sorted(rows, key=lambda r: r.number),
            )
        )
    return sorted(searches, key=lambda s: s.task)


def trials_for_plot(searches: list[TaskSearch]) -> list[dict[str, Any]]:
    """The rows `plots.plot_trial_history` draws (first objective; finished trials only)."""
    return [
        {
            "task": s.task,
            "number": t.number,
            "state": t.state,
            "value": None if not t.values else t.values[0],
            "chosen": t.chosen,
        }
        for s in searches
        for t in s.trials
        if t.state in ("COMPLETE", "PRUNED", "FAIL")
    ]
