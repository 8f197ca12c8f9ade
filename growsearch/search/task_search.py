"""The search of one task: its Optuna study, the trials it runs, and the commit rule that picks one.

`TaskSearch.run` opens (or reopens) the study `task-T`, enqueues the method's first trials, fails the
trials a killed process left RUNNING and re-enqueues every interrupted trial (left RUNNING, or failed by
Ctrl-C or a lost Ray worker without an error of its own; a retry keeps the original trial's seed), hands
the rest of the budget to the backend, and returns the trial to commit (`committed_trial`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from growsearch.config.space import SearchConfig
from growsearch.errors import TrainingError
from growsearch.methods.base import SearchPlan, TaskContext
from growsearch.search.samplers import make_pruner, make_sampler
from growsearch.search.trials import Backend, TaskTrials
from growsearch.trial_record import (
    counts_toward_budget,
    failure,
    is_interrupted,
    plan_attrs,
    planned_decisions,
    read_record,
    retry_attrs,
    retry_of,
    study_committed_attrs,
    write_attrs,
)


@dataclass(frozen=True)
class TaskSearch:
    config: SearchConfig
    storage: optuna.storages.BaseStorage
    backend: Backend

    def open(self, ctx: TaskContext, plan: SearchPlan) -> optuna.Study:
        """The task's study, created or reopened, with its first trials enqueued and its interrupted
        trials queued again."""
        study = self._open_study(ctx, plan)
        self._enqueue_initial(study, plan)
        self._retry_interrupted(study)
        return study

    def run(
        self, study: optuna.Study, t: int, plan: SearchPlan, trials: Callable[[int], TaskTrials]
    ) -> FrozenTrial:
        """Run what is left of task t's budget (`trials(n)`: the backend's hand-over for n more trials) and
        return the trial the commit rule picks, marked on the study."""
        done = self.done(study)
        if plan.budget > done:
            self.backend.run_trials(trials(plan.budget - done))
        score = plan.score or _accuracy
        best = committed_trial(study, t, self.config.accuracy_tolerance, score)
        write_attrs(study, study_committed_attrs(best.number))
        return best

    @staticmethod
    def done(study: optuna.Study) -> int:
        return sum(1 for tr in study.get_trials(deepcopy=False) if counts_toward_budget(tr))

    def _open_study(self, ctx: TaskContext, plan: SearchPlan) -> optuna.Study:
        config = self.config
        sampler = plan.sampler or make_sampler(
            config.sampler or ("nsga2" if config.multi_objective else "tpe"), seed=ctx.seed
        )
        study = optuna.create_study(
            study_name=f"task-{ctx.task_id}",
            storage=self.storage,
            sampler=sampler,
            pruner=make_pruner(config.pruner),
            directions=config.directions,
            load_if_exists=True,
        )
        if study.metric_names is None:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, still so in 5.0
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(config.objectives))
        return study

    @staticmethod
    def _enqueue_initial(study: optuna.Study, plan: SearchPlan) -> None:
        """Enqueue the method's initial trials; a process killed while enqueuing left some: enqueue only the
        ones not there yet."""
        existing = [planned_decisions(tr) for tr in study.get_trials(deepcopy=False)]
        for decisions in plan.initial[: plan.budget]:
            if decisions not in existing:
                study.enqueue_trial(decisions, user_attrs=plan_attrs(decisions))

    @staticmethod
    def _retry_interrupted(study: optuna.Study) -> None:
        """Interrupted trials run again with the same decisions and seed: those a killed process left
        RUNNING (failed here first), and those Ctrl-C (or a lost Ray worker) failed without an error of
        their own. A trial and its retries form a line; a line whose newest trial was interrupted gets a
        retry (once: the retry, waiting, is then the line's newest)."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
        newest: dict[int, FrozenTrial] = {}
        for trial in sorted(study.get_trials(deepcopy=False), key=lambda tr: tr.number):
            newest[retry_of(trial) if retry_of(trial) is not None else trial.number] = trial
        for trial in newest.values():
            if is_interrupted(trial):
                decisions = planned_decisions(trial) or {}
                study.enqueue_trial(
                    decisions,
                    user_attrs={**plan_attrs(decisions), **retry_attrs(trial)},
                    skip_if_exists=False,
                )


def _accuracy(trial: FrozenTrial) -> float:
    return trial.values[0]


def _added_parameters(trial: FrozenTrial) -> int:
    record = read_record(trial)
    return record.added_parameters if record else 0


def committed_trial(
    study: optuna.Study, t: int, tolerance: float, score: Callable[[FrozenTrial], float] = _accuracy
) -> FrozenTrial:
    """Among the completed trials within `tolerance` of the best `score` (the method's: validation accuracy
    unless its paper ranks by a reward), the one that adds the fewest parameters: with no tolerance, the
    best, ties going to the smaller candidate. In a multi-objective search: among the Pareto points within
    `tolerance` of the best accuracy, the one with the lowest costs."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        errors = [failure(tr) for tr in study.get_trials(deepcopy=False) if failure(tr)]
        detail = f"; first error: {errors[0]}" if errors else ""
        raise TrainingError(f"task {t}: no trial completed, so there is no candidate to commit{detail}")
    if len(study.directions) == 1:
        best = max(score(tr) for tr in complete)
        close = [tr for tr in complete if score(tr) >= best - tolerance]
        return min(close, key=lambda tr: (_added_parameters(tr), -score(tr), tr.number))
    front = study.best_trials
    best_accuracy = max(tr.values[0] for tr in front)
    close = [tr for tr in front if tr.values[0] >= best_accuracy - tolerance]
    return min(close, key=lambda tr: (*tr.values[1:], -tr.values[0], tr.number))
