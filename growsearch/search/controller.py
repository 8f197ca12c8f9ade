"""The growth controller: one search per task, then commit the best candidate.

For task t: open (or reopen) the study `task-t`; each trial asks the method for a candidate (define-by-run
on the trial), trains it, reports validation accuracy per epoch (pruners work), records added parameters
and multiply-adds, and keeps the trained weights in trials/t/N. The best trial's weights are then loaded
(not retrained), the method's commit policy runs, every task is evaluated and the task is committed.

Resuming is the same call: committed tasks are loaded, not redone; finished trials of the open task are
not re-run; a trial left RUNNING by a killed process is marked failed and enqueued again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import TrialState

from growsearch.data.task import Task, TaskStream
from growsearch.errors import TrainingError
from growsearch.graph.module_graph import FREE, ModuleGraph
from growsearch.grow import operators as ops
from growsearch.methods.base import Method, Retrain, TaskContext
from growsearch.search.run_folder import RunFolder
from growsearch.search.samplers import make_pruner
from growsearch.search.training import evaluate, train_candidate
from growsearch.search.trial_job import SaveTrial, TrialJob, derived_seed

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Backend(Protocol):
    """Where a task's trials run (see growsearch.backends): run `n_trials` more trials of `job` in
    `study`, save each trained candidate with `save_trial`, call `callbacks` after each trial."""

    def optimize(
        self,
        study: optuna.Study,
        job: TrialJob,
        n_trials: int,
        save_trial: SaveTrial,
        callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    ) -> None: ...


class Reporter(Protocol):
    """Progress callbacks (the CLI shows bars; tests pass `SilentReporter`)."""

    def task_started(self, task: int, n_tasks: int, n_trials: int, done: int) -> None: ...
    def trial_finished(self, task: int, trial: optuna.trial.FrozenTrial) -> None: ...
    def task_committed(self, task: int, record: dict[str, Any]) -> None: ...


class SilentReporter:
    def task_started(self, task: int, n_tasks: int, n_trials: int, done: int) -> None:
        pass

    def trial_finished(self, task: int, trial: optuna.trial.FrozenTrial) -> None:
        pass

    def task_committed(self, task: int, record: dict[str, Any]) -> None:
        pass


@dataclass
class GrowthController:
    method: Method
    stream: TaskStream
    run: RunFolder
    backend: Backend
    seed: int
    reporter: Reporter = SilentReporter()  # noqa: RUF009 - stateless

    def __post_init__(self) -> None:
        self.space = self.method.space
        self.specs = self.method.specs_for(self.stream.input_shape)
        self.storage = self.run.storage(self.space.search.storage)

    # ---- the whole stream ---------------------------------------------------------------------------
    def run_all(self) -> list[dict[str, Any]]:
        graph = ModuleGraph(self.stream.input_shape)
        records: list[dict[str, Any]] = []
        committed = self.run.committed_tasks()
        for t in range(len(self.stream)):
            if t in committed:
                graph, record = self.run.load_task(t)
            else:
                graph, record = self.learn_task(t, graph, records)
            records.append(record)
        return records

    def context(self, t: int, committed: ModuleGraph, records: list[dict[str, Any]]) -> TaskContext:
        return TaskContext(
            task_id=t,
            task=self.stream.tasks[t],
            committed=committed,
            specs=self.specs,
            decisions=tuple(r["decisions"] for r in records),
            seed=derived_seed(self.seed, t),
        )

    # ---- one task -----------------------------------------------------------------------------------
    def learn_task(
        self, t: int, committed: ModuleGraph, records: list[dict[str, Any]]
    ) -> tuple[ModuleGraph, dict[str, Any]]:
        started = time.perf_counter()
        ctx = self.context(t, committed, records)
        study = optuna.create_study(
            study_name=f"task-{t}",
            storage=self.storage,
            sampler=self.method.sampler(ctx),
            pruner=make_pruner(self.space.search.pruner),
            directions=self.space.search.directions,
            load_if_exists=True,
        )
        budget = self.method.trial_budget(ctx)
        # a process killed while enqueuing leaves some: enqueue only the ones not there yet
        existing = [
            tr.params or tr.system_attrs.get("fixed_params", {}) for tr in study.get_trials(deepcopy=False)
        ]
        for params in self.method.initial_trials(ctx)[:budget]:
            if params not in existing:
                study.enqueue_trial(params)
        self._retry_interrupted(study)
        done = sum(1 for tr in study.get_trials(deepcopy=False) if _counts_toward_budget(tr))
        self.reporter.task_started(t, len(self.stream), budget, done)
        if budget > done:
            report = [lambda _study, trial: self.reporter.trial_finished(t, trial)]
            job = TrialJob(self.method, ctx, self.seed)
            self.backend.optimize(study, job, budget - done, self.run.save_trial, report)
        best = _committed_trial(study, t, self.space.search.accuracy_tolerance, self.method.selection_score)
        chosen = self.run.load_trial(t, best.number)
        retrain_macs = [0]
        graph = self.method.commit(chosen, ctx, self._retrainer(ctx, retrain_macs))
        record = self._record(t, graph, study, best, retrain_macs[0], time.perf_counter() - started)
        self.run.commit_task(t, graph, record)
        self.reporter.task_committed(t, record)
        return graph, record

    def _retrainer(self, ctx: TaskContext, macs: list[int]) -> Retrain:
        def retrain(
            graph: ModuleGraph, epochs: int, train_owner: int = FREE, lr_scale: float = 1.0
        ) -> ModuleGraph:
            task = ctx.task
            seed = derived_seed(self.seed, ctx.task_id, "commit")
            config = dataclasses.replace(self.space.training, lr=self.space.training.lr * lr_scale)
            result = train_candidate(
                graph,
                ctx.task_id,
                task.train,
                task.val,
                config,
                seed=seed,
                epochs=epochs,
                train_owner=train_owner,
            )
            macs[0] += result.train_macs
            return result.graph

        return retrain

    def _retry_interrupted(self, study: optuna.Study) -> None:
        """Trials a killed process left RUNNING are failed and enqueued again with the same decisions."""
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            params = trial.params or trial.system_attrs.get("fixed_params", {})
            original = trial.user_attrs.get("retry_of", trial.number)
            study.enqueue_trial(params, user_attrs={"retry_of": original}, skip_if_exists=False)

    # ---- the committed task's record ----------------------------------------------------------------
    def _record(
        self,
        t: int,
        graph: ModuleGraph,
        study: optuna.Study,
        best: optuna.trial.FrozenTrial,
        retrain_macs: int,
        seconds: float,
    ) -> dict[str, Any]:
        trials = study.get_trials(deepcopy=False)
        task = self.stream.tasks[t]
        view = graph.view(t)
        return {
            "task": t,
            "classes": list(task.classes),
            "chosen_trial": best.number,
            "decisions": self.method.decisions(best),
            "val_accuracy": best.values[0],
            "pareto_front": [tr.number for tr in study.best_trials] if len(study.directions) > 1 else None,
            "accuracy_row": self.accuracy_row(graph, t),
            "parameters": graph.n_parameters(),
            "view_parameters": graph.n_parameters(view),
            # training of every trial, any training a method does while building a candidate, and commit
            "train_macs": sum(
                tr.user_attrs.get("train_macs", 0) + tr.user_attrs.get("search_macs", 0) for tr in trials
            )
            + retrain_macs,
            "pass_macs": 3 * graph.macs(view) * len(task.train),
            "trials": {state.name.lower(): sum(tr.state == state for tr in trials) for state in TrialState},
            "seconds": seconds,
        }

    def accuracy_row(self, graph: ModuleGraph, t: int) -> list[float]:
        """Test accuracy on every task after committing task t. A task not yet learned is scored on the
        committed graph with a fresh random head on the newest path's last layer, as a multi-head model
        meets it before training (the upper triangle of the accuracy matrix)."""
        device = self.space.training.torch_device()
        row = []
        for j, task in enumerate(self.stream.tasks):
            view = graph if j <= t else self.untrained_view(graph, t, j, task)
            row.append(evaluate(view, j, task.test, device=device))
        return row

    def untrained_view(self, graph: ModuleGraph, t: int, j: int, task: Task) -> ModuleGraph:
        torch.manual_seed(derived_seed(self.seed, t, j, "untrained"))
        last_layer = max(graph.layer_nodes(t).items())[1]
        return ops.add_head(graph, j, last_layer, task.n_outputs)

    def random_init_accuracy(self) -> list[float]:
        """b_j: test accuracy of a randomly initialised base network with a fresh head, per task."""
        row = []
        for j, task in enumerate(self.stream.tasks):
            torch.manual_seed(derived_seed(self.seed, j, "random-init"))
            fresh = ops.reuse_prefix(
                ModuleGraph(self.stream.input_shape), j, None, 0, self.specs, task.n_outputs
            )
            row.append(evaluate(fresh, j, task.test))
        return row


def _counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished trials count; so does a trial that failed on its own (a NaN loss), not one that was killed."""
    return trial.state in FINISHED or (trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def _committed_trial(
    study: optuna.Study, t: int, tolerance: float, score: Callable[[optuna.trial.FrozenTrial], float]
) -> optuna.trial.FrozenTrial:
    """The best `score` (the method's: validation accuracy unless its paper ranks by a reward); in a
    multi-objective search, the Pareto point with the best accuracy or, among Pareto points within
    `tolerance` of it, the one with the lowest costs."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        errors = [
            tr.user_attrs["error"] for tr in study.get_trials(deepcopy=False) if "error" in tr.user_attrs
        ]
        detail = f"; first error: {errors[0]}" if errors else ""
        raise TrainingError(f"task {t}: no trial completed, so there is no candidate to commit{detail}")
    if len(study.directions) == 1:
        return max(complete, key=lambda tr: (score(tr), -tr.number))
    front = study.best_trials
    best_accuracy = max(tr.values[0] for tr in front)
    close = [tr for tr in front if tr.values[0] >= best_accuracy - tolerance]
    return min(close, key=lambda tr: (*tr.values[1:], -tr.values[0], tr.number))
