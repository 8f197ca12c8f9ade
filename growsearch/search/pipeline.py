"""The growth pipeline: the per-task loop of a continual-learning run whose growth is a search.

For each task of the stream, in order (a committed task is loaded, not redone):
  1. task services: the task's task-inference autoencoder where the run keeps them, the task classifier
     where it infers the task (`task_services`);
  2. search: the task's study runs its trials through the backend, each trial building a candidate from
     the method's decisions and training it; the commit rule picks one (`task_search`);
  3. commit: the chosen candidate goes through the method's commit policy (`commit`);
  4. evaluation: every task's test accuracy as the scenario plan scores it (`evaluation`);
  5. the task's typed record and checkpoint are written, with the exemplar memory after the task.
Resuming is the same call: finished trials of the open task are kept, interrupted ones retried.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from optuna.trial import FrozenTrial

from growsearch.data.task import TaskStream
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods.base import Method, TaskContext
from growsearch.search.commit import commit_chosen, task_record, write_task
from growsearch.search.evaluation import Evaluation
from growsearch.search.halving import halving_for
from growsearch.search.kept_size import kept_size
from growsearch.search.loggers import Logger
from growsearch.search.scenario_plan import ScenarioPlan
from growsearch.search.task_search import TaskSearch
from growsearch.search.task_services import TaskServices
from growsearch.search.trial_job import TrialJob
from growsearch.search.trials import Backend, TaskTrials
from growsearch.seeds import derived_seed
from growsearch.store.run_folder import RunFolder
from growsearch.task_record import TaskRecord
from growsearch.train.augment import training_augmentation
from growsearch.train.candidate import resolve_device
from growsearch.train.pack_sizing import max_padding, pack_size
from growsearch.train.trainer import EpochStats, count_macs


class Reporter(Protocol):
    """Progress callbacks (the CLI shows bars; tests pass `SilentReporter`)."""

    def task_started(self, task: int, n_tasks: int, n_trials: int, done: int) -> None: ...
    def trial_finished(self, task: int, trial: FrozenTrial) -> None: ...
    def task_committed(self, task: int, record: TaskRecord) -> None: ...


class SilentReporter:
    def task_started(self, task: int, n_tasks: int, n_trials: int, done: int) -> None:
        pass

    def trial_finished(self, task: int, trial: FrozenTrial) -> None:
        pass

    def task_committed(self, task: int, record: TaskRecord) -> None:
        pass


@dataclass
class GrowthPipeline:
    method: Method
    stream: TaskStream  # the stream the method trains on (`plan.trains_in`)
    plan: ScenarioPlan
    run: RunFolder
    backend: Backend
    seed: int
    reporter: Reporter = field(default_factory=SilentReporter)
    loggers: Sequence[Logger] = ()

    def __post_init__(self) -> None:
        space = self.method.space
        self.specs = self.method.specs_for(self.stream.input_shape)
        self.services = TaskServices(self.method, self.stream, self.plan, self.run, self.seed)
        self.search = TaskSearch(space.search, self.run.storage(space.search.storage), self.backend)
        self.evaluation = Evaluation(self.method, self.stream, self.plan, self.seed)
        normalized = self.stream.normalization is not None
        self.augmentation = training_augmentation(
            space.training.augment, self.stream.benchmark, normalized=normalized
        )

    def run_all(self) -> list[TaskRecord]:
        graph = ModuleGraph(self.stream.input_shape)
        records: list[TaskRecord] = []
        committed = self.run.committed_tasks()
        for t in range(len(self.stream)):
            if t in committed:
                graph, record = self.run.load_task(t)
                self.services.restore(t)
            else:
                graph, record = self.learn_task(t, graph, records)
            records.append(record)
        return records

    def learn_task(
        self, t: int, committed: ModuleGraph, records: Sequence[TaskRecord]
    ) -> tuple[ModuleGraph, TaskRecord]:
        started = time.perf_counter()
        with count_macs() as task_models:  # before the search: a method may build from the task's autoencoder
            self.services.prepare(t)
        ctx = self.context(t, committed, records)
        plan = self.method.search_plan(ctx)
        study = self.search.open(ctx, plan)
        self.reporter.task_started(t, len(self.stream), plan.budget, self.search.done(study))
        objectives = self.method.space.search.objectives
        job = TrialJob(self.method, ctx, self.seed, objectives, self.augmentation)
        best = self.search.run(study, t, plan, functools.partial(self._trials, study, job, plan.pack_limit))
        chosen = commit_chosen(self.method, self.run, ctx, best, self.seed, self.augmentation)
        graph, commit_ctx, retrain_macs = chosen
        rows = self.evaluation.rows(graph, t, self.services.router(t))
        seconds = time.perf_counter() - started
        record = task_record(self.method, commit_ctx, graph, study, best, rows, retrain_macs, seconds)
        if self.services.trains_task_models:  # their training counts in the task's compute (CE)
            train_macs = record.train_macs + task_models.macs
            record = dataclasses.replace(record, train_macs=train_macs, inference_macs=task_models.macs)
        cost = self.services.inference_cost()
        if cost is not None:  # what task inference keeps beside the network, in the record with it
            record = dataclasses.replace(record, mechanism={**record.mechanism, "task_classifier": cost})
        self.services.remember(t, graph, commit_ctx)
        saved = self.services.saved(t)
        inference = [a.tensors() for a in self.services.autoencoders[:t]]  # the earlier tasks' gates too
        kept = kept_size(graph, t + 1, [*inference, *saved.values()])
        record = dataclasses.replace(record, kept=kept)
        write_task(self.run, record, graph, saved)
        for logger in self.loggers:
            logger.task(t, record)
        self.reporter.task_committed(t, record)
        return graph, record

    def context(self, t: int, committed: ModuleGraph, records: Sequence[TaskRecord]) -> TaskContext:
        task, exemplars, memory = self.services.task_data(t)
        return TaskContext(
            task_id=t,
            task=task,
            committed=committed,
            specs=self.specs,
            history=tuple(records),
            seed=derived_seed(self.seed, t),
            n_tasks=len(self.stream),
            autoencoders=tuple(self.services.autoencoders[: t + 1]),
            exemplars=exemplars,
            memory=memory,
        )

    def _trials(self, study, job: TrialJob, pack_limit: int | None, n_trials: int) -> TaskTrials:
        """The backend's hand-over: `n_trials` more trials of the task, how to keep and report them."""
        search, device = self.method.space.search, resolve_device(self.method.space.training.device)
        pruning = search.pruner != "none"
        return TaskTrials(
            study=study,
            job=job,
            n_trials=n_trials,
            save_trial=self.run.trial_saver(),
            on_trial=lambda _study, trial: self.reporter.trial_finished(job.task_id, trial),
            on_epoch=functools.partial(self._log_epoch, job.task_id),
            early_stopping=pruning and not search.multi_objective,
            pack=pack_size(search.pack, pack_limit, pruning, device, self.specs),
            max_padding=max_padding(search.pack, device),
            halving=(
                halving_for(
                    search.min_epochs, search.eta, job.training.epochs, study.get_trials(deepcopy=False)
                )
                if search.fidelity == "halving"
                else None
            ),
        )

    def _log_epoch(self, task: int, trial: int, stats: EpochStats) -> None:
        for logger in self.loggers:
            logger.epoch(task, trial, stats)
