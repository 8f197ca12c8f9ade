"""The commit of one task: the chosen trial's trained candidate (loaded, not retrained) goes through the
method's commit policy, the task's typed record is written, and the task's checkpoint is renamed into place
with what the task services keep beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from growsearch.data.task import Split
from growsearch.errors import TrainingError
from growsearch.graph.module_graph import FREE, ModuleGraph
from growsearch.methods.base import Method, TaskContext
from growsearch.seeds import derived_seed
from growsearch.store.run_folder import RunFolder
from growsearch.task_record import TaskRecord, decision_margin
from growsearch.train.augment import Augmentation
from growsearch.train.candidate import train_candidate
from growsearch.train.trainer import count_macs
from growsearch.trial_record import counts_toward_budget, read_record, spent_macs


@dataclass
class Retrainer:
    """The commit policy's trainer (`Method.commit`'s `retrain`): the task's own data and settings and its own
    seed (`commit_chosen` counts what it spends into the task's record)."""

    method: Method
    ctx: TaskContext
    seed: int
    augmentation: Augmentation | None = None

    def __call__(
        self,
        graph: ModuleGraph,
        epochs: int,
        train_owner: int = FREE,
        lr_scale: float = 1.0,
        train: Split | None = None,
    ) -> ModuleGraph:
        ctx = self.ctx
        try:
            result = train_candidate(
                graph,
                ctx.task_id,
                ctx.task.train if train is None else train,
                ctx.task.val,
                self.method.space.training,
                seed=derived_seed(self.seed, ctx.task_id, "commit"),
                epochs=epochs,
                train_owner=train_owner,
                lr_scale=lr_scale,
                augmentation=self.augmentation,
            )
        except TrainingError as error:
            raise TrainingError(f"task {ctx.task_id}, commit's retraining: {error}") from None
        return result.graph


def commit_chosen(
    method: Method,
    run: RunFolder,
    ctx: TaskContext,
    best: FrozenTrial,
    seed: int,
    augmentation: Augmentation | None = None,
) -> tuple[ModuleGraph, TaskContext, int]:
    """The chosen trial's candidate after the method's commit policy, the context it committed in (with the
    trial's decisions), and the compute the policy's retraining spent."""
    chosen = run.load_trial(ctx.task_id, best.number)
    decided = read_record(best)
    commit_ctx = dataclasses.replace(ctx, decisions=dict(decided.decisions if decided else best.params))
    retrain = Retrainer(method, commit_ctx, seed, augmentation)
    with count_macs() as committing:  # its retraining, and what else it trains (CCGN's task classifier)
        graph = method.commit(chosen, commit_ctx, retrain)
    return graph, commit_ctx, committing.macs


def task_record(
    method: Method,
    ctx: TaskContext,
    graph: ModuleGraph,
    study: optuna.Study,
    best: FrozenTrial,
    rows: Mapping[str, Any],
    retrain_macs: int,
    seconds: float,
) -> TaskRecord:
    """What the committed task records: its decisions and mechanism, accuracy rows, size and compute."""
    t, task = ctx.task_id, ctx.task
    trials = study.get_trials(deepcopy=False)
    chosen = read_record(best)
    mechanism = {**(chosen.mechanism if chosen else {}), **method.record(graph, ctx, study)}
    return TaskRecord(
        task=t,
        classes=list(task.classes),
        chosen_trial=best.number,
        decisions=chosen.decisions if chosen else dict(best.params),
        mechanism=mechanism,
        val_accuracy=best.values[0],
        pareto_front=[tr.number for tr in study.best_trials] if len(study.directions) > 1 else None,
        parameters=graph.n_parameters(),
        view_parameters=graph.view_parameters(t),
        # every trial that counts (completed, pruned or failed on its own: not one a kill interrupted),
        # including what a method trained while building candidates, and the commit's retraining
        train_macs=sum(spent_macs(tr) for tr in trials if counts_toward_budget(tr)) + retrain_macs,
        pass_macs=3 * graph.macs(graph.view(t)) * len(task.train),
        trials={state.name.lower(): sum(tr.state == state for tr in trials) for state in TrialState},
        seconds=seconds,
        decision=decision_margin(
            best.values[0],
            [
                (tr.number, tr.values[0])
                for tr in trials
                if tr.state == TrialState.COMPLETE and tr.number != best.number
            ],
            len(task.val),
        ),
        **rows,
    )


def write_task(
    run: RunFolder, record: TaskRecord, graph: ModuleGraph, kept: Mapping[str, dict[str, torch.Tensor]]
) -> None:
    """The task's checkpoint (graph, weights, record and what is kept beside them), renamed into place."""
    run.commit_task(record.task, graph, record, dict(kept) or None)
