"""The growth controller: one search per task, then commit the best candidate.

For task t: open (or reopen) the study `task-t`; each trial asks the method for its decisions, builds the
candidate, trains it, reports validation accuracy per epoch (pruners work), records added parameters and
multiply-adds, and keeps the trained weights in trials/t/N. The best trial's weights are then loaded (not
retrained), the method's commit policy runs, every task is evaluated and the task is committed.

Resuming is the same call: committed tasks are loaded, not redone; finished trials of the open task are
not re-run; a trial left RUNNING by a killed process is marked failed and enqueued again.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from growsearch.config.space import InferenceConfig
from growsearch.data.memory import ExemplarMemory
from growsearch.data.task import Split, Task, TaskStream
from growsearch.errors import CheckpointError, TrainingError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import FREE, ModuleGraph
from growsearch.graph.specs import NodeSpec
from growsearch.grow import operators as ops
from growsearch.inference.expert_gate import TaskAutoencoder, route, train_autoencoder
from growsearch.methods.base import Method, Retrain, TaskContext
from growsearch.search.backend import Backend, TaskTrials
from growsearch.search.loggers import Logger
from growsearch.search.samplers import make_pruner, make_sampler
from growsearch.search.trial_job import TrialJob
from growsearch.seeds import derived_seed
from growsearch.store.run_folder import GATE_FILE, MEMORY_FILE, RunFolder
from growsearch.train.candidate import evaluate, resolve_device, train_candidate
from growsearch.train.trainer import EpochStats
from growsearch.trial_record import (
    counts_toward_budget,
    failure,
    is_interrupted,
    plan_attrs,
    planned_decisions,
    read_record,
    retry_attrs,
    retry_of,
    spent_macs,
    study_committed_attrs,
    write_attrs,
)


class Reporter(Protocol):
    """Progress callbacks (the CLI shows bars; tests pass `SilentReporter`)."""

    def task_started(self, task: int, n_tasks: int, n_trials: int, done: int) -> None: ...
    def trial_finished(self, task: int, trial: FrozenTrial) -> None: ...
    def task_committed(self, task: int, record: dict[str, Any]) -> None: ...


class SilentReporter:
    def task_started(self, task: int, n_tasks: int, n_trials: int, done: int) -> None:
        pass

    def trial_finished(self, task: int, trial: FrozenTrial) -> None:
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
    loggers: Sequence[Logger] = ()
    # None: the task id is given at test time (task-IL); else each committed task gets ExpertGate's gate
    # and tasks are scored class-IL, the task inferred (growsearch.inference)
    inference: InferenceConfig | None = None
    shared_labels: bool = False  # with inference: domain-IL (every task the same labels), else class-IL

    def __post_init__(self) -> None:
        self.space = self.method.space
        self.specs = self.method.specs_for(self.stream.input_shape)
        self.storage = self.run.storage(self.space.search.storage)
        # each task's autoencoder where the run infers the task or the method reads them (ExpertGate)
        inferring = None if self.method.infers_task else self.inference  # the method's own, else the gate
        self.gate_settings = inferring or (self.space.inference if self.method.reads_task_gates else None)
        self.gates: list[TaskAutoencoder] = []  # one per task learnt so far, in order (with gate settings)
        self.memory = self.method.exemplar_memory()  # rehearsal: exemplars of the tasks committed so far

    # ---- the whole stream ---------------------------------------------------------------------------
    def run_all(self) -> list[dict[str, Any]]:
        graph = ModuleGraph(self.stream.input_shape)
        records: list[dict[str, Any]] = []
        committed = self.run.committed_tasks()
        for t in range(len(self.stream)):
            if t in committed:
                graph, record = self.run.load_task(t)
                self._load_gate(t)
                self._load_memory(t)
            else:
                graph, record = self.learn_task(t, graph, records)
            records.append(record)
        return records

    def context(self, t: int, committed: ModuleGraph, records: list[dict[str, Any]]) -> TaskContext:
        task, exemplars, memory = self.stream.tasks[t], 0, None
        if self.memory is not None and len(self.memory) and self.method.rehearses:
            # rehearsal: the task trains on its samples and the memory's
            task = dataclasses.replace(task, train=self.memory.joined(task.train))
            exemplars = len(self.memory)
        elif self.memory is not None and len(self.memory):  # read by the method: labelled with their task
            xs, _, tasks = self.memory.samples()
            memory = Split(xs, tasks)
        return TaskContext(
            task_id=t,
            task=task,
            committed=committed,
            specs=self.specs,
            history=tuple(r["decisions"] for r in records),
            seed=derived_seed(self.seed, t),
            n_tasks=len(self.stream),
            gates=tuple(self.gates[: t + 1]),
            exemplars=exemplars,
            memory=memory,
        )

    # ---- one task -----------------------------------------------------------------------------------
    def learn_task(
        self, t: int, committed: ModuleGraph, records: list[dict[str, Any]]
    ) -> tuple[ModuleGraph, dict[str, Any]]:
        started = time.perf_counter()
        gate = self._train_gate(t)  # before the search: a method may build from it (relatedness)
        ctx = self.context(t, committed, records)
        study = self._open_study(ctx)
        budget = self.method.trial_budget(ctx)
        self._enqueue_initial(study, ctx, budget)
        self._retry_interrupted(study)
        done = sum(1 for tr in study.get_trials(deepcopy=False) if counts_toward_budget(tr))
        self.reporter.task_started(t, len(self.stream), budget, done)
        if budget > done:
            search = self.space.search
            self.backend.run_trials(
                TaskTrials(
                    study=study,
                    job=TrialJob(self.method, ctx, self.seed, search.objectives),
                    n_trials=budget - done,
                    epochs=self.space.training.epochs,
                    save_trial=self.run.trial_saver(),
                    on_trial=lambda _study, trial: self.reporter.trial_finished(t, trial),
                    on_epoch=functools.partial(self._log_epoch, t),
                    early_stopping=search.pruner != "none" and not search.multi_objective,
                    pack=self.pack_size(ctx),
                    max_padding=self.max_padding(),
                )
            )
        best = committed_trial(study, t, self.space.search.accuracy_tolerance, self.method.selection_score)
        write_attrs(study, study_committed_attrs(best.number))
        chosen = self.run.load_trial(t, best.number)
        retrain_macs = [0]
        decided = read_record(best)
        commit_ctx = dataclasses.replace(ctx, decisions=dict(decided.decisions if decided else best.params))
        graph = self.method.commit(chosen, commit_ctx, self._retrainer(ctx, retrain_macs))
        record = self._record(commit_ctx, graph, study, best, retrain_macs[0], time.perf_counter() - started)
        kept = {GATE_FILE: gate.tensors()} if gate is not None else {}
        if self.memory is not None:
            self._remember(t, graph, commit_ctx)
            kept[MEMORY_FILE] = self.memory.tensors()
        self.run.commit_task(t, graph, record, kept or None)
        for logger in self.loggers:
            logger.task(t, record)
        self.reporter.task_committed(t, record)
        return graph, record

    def pack_size(self, ctx: TaskContext) -> int:
        """How many trials train together: `search.pack`, or with "auto" as many as the method allows
        (`Method.pack_limit`), at most AUTO_PACK, and as fit in a quarter of the free memory (so a resume
        on a machine with far less memory may pack differently); one with a pruner, which stops a trial
        on what earlier trials reached, not on what its pack mates reach at the same time. Not capped by
        the trials left: a packed search stays packed to its last trial, so the retry of a trial
        interrupted in a pack trains in that pack's layout."""
        setting = self.space.search.pack
        if setting != "auto":
            return setting
        if self.space.search.pruner != "none":  # a pruner stops a trial on what earlier trials reached
            return 1
        device = resolve_device(self.space.training.device)
        fitting = free_memory(device) // 4 // max(candidate_bytes(self.specs), 1)
        return max(1, min(self.method.pack_limit(ctx) or AUTO_PACK, AUTO_PACK, fitting))

    def max_padding(self) -> float | None:
        """With `pack: auto` on a CPU, a pack whose padding to one template would multiply its compute by
        more than CPU_MAX_PADDING trains one by one (MNTDP-D's candidates, from a whole new column to a
        new head, pad to about three times theirs: slower than alone, measured); on a GPU, where a small
        candidate leaves the device idle, padding is cheap. An explicit pack size always packs."""
        if self.space.search.pack != "auto" or resolve_device(self.space.training.device).type == "cuda":
            return None
        return CPU_MAX_PADDING

    # ---- task inference (class-IL), ExpertGate's relatedness ---------------------------------------
    def _train_gate(self, t: int) -> TaskAutoencoder | None:
        """Task t's autoencoder, on its training inputs (seeded: a resumed task trains the same one)."""
        if self.gate_settings is None:
            return None
        gate = train_autoencoder(
            self.stream.tasks[t].train.x, self.gate_settings, derived_seed(self.seed, t, "gate")
        )
        del self.gates[t:]
        self.gates.append(gate)
        return gate

    def _load_gate(self, t: int) -> None:
        if self.gate_settings is None:
            return
        tensors = self.run.load_task_tensors(t, GATE_FILE)
        if tensors is None:
            raise CheckpointError(
                f"{self.run.task_dir(t)} holds no task-inference gate: the run was started with the task id "
                "given at test time; resume it under its own scenario"
            )
        self.gates.append(TaskAutoencoder.from_tensors(tensors))

    # ---- rehearsal ----------------------------------------------------------------------------------
    def _remember(self, t: int, graph: ModuleGraph, ctx: TaskContext) -> None:
        """Add the committed task's exemplars to the memory (herding on the method's features)."""
        train = self.stream.tasks[t].train
        features = self.method.exemplar_features(graph, ctx, train.x)
        seed = derived_seed(self.seed, t, "memory")
        # a memory the method reads (not rehearsed) keeps each task's exemplars as one class: the task
        labels = train.y if self.method.rehearses else torch.full_like(train.y, t)
        self.memory.add_task(t, train.x, labels, seed=seed, features=features)

    def _load_memory(self, t: int) -> None:
        if self.memory is None:
            return
        tensors = self.run.load_task_tensors(t, MEMORY_FILE)
        if tensors is None:
            raise CheckpointError(
                f"{self.run.task_dir(t)} holds no exemplar memory, which method {self.space.method} keeps "
                "after every task; the run folder was not written by this method"
            )
        self.memory = ExemplarMemory.from_tensors(tensors)

    def inferred_rows(self, graph: ModuleGraph, t: int) -> tuple[list[float], list[float]]:
        """After task t, per task: test accuracy with the task inferred (the gate picks a task, that task's
        head the label) and the share of its test samples routed to it. Class-IL (classes of different
        tasks disjoint): a sample is right only when routed to its own task and right there; a task not
        yet learned scores 0. Domain-IL (`shared_labels`: every task has the same labels): a sample is
        right whatever head names its label, so tasks not yet learned are scored too."""
        device = resolve_device(self.space.training.device)
        accuracy, routed_right = [], []
        heads: dict[int, torch.nn.Module] = {}
        for j, task in enumerate(self.stream.tasks):
            if len(task.test) == 0:
                accuracy.append(float("nan"))
                routed_right.append(float("nan"))
                continue
            if j > t and not self.shared_labels:
                accuracy.append(0.0)
                routed_right.append(0.0)
                continue
            if self.method.infers_task:
                routed = self.method.infer_task(graph, t, task.test.x).cpu()
            else:
                routed = route(self.gates[: t + 1], task.test.x, self.inference.temperature)
            predicted = torch.full((len(task.test),), -1, dtype=torch.long)
            for r in routed.unique().tolist():
                chosen = routed == r
                if r not in heads:  # each task's view compiled once for the whole row
                    heads[r] = compile_view(graph, r).module.to(device).eval()
                module = heads[r]
                with torch.no_grad():
                    predicted[chosen] = module(task.test.x[chosen].to(device)).argmax(1).cpu()
            right = predicted == task.test.y
            if not self.shared_labels:
                right &= routed == j
            accuracy.append(float(right.double().mean()))
            routed_right.append(float((routed == j).double().mean()))
        return accuracy, routed_right

    def _log_epoch(self, task: int, trial: int, stats: EpochStats) -> None:
        for logger in self.loggers:
            logger.epoch(task, trial, stats)

    def _open_study(self, ctx: TaskContext) -> optuna.Study:
        search = self.space.search
        sampler = self.method.sampler(ctx) or make_sampler(
            search.sampler or ("nsga2" if search.multi_objective else "tpe"), seed=ctx.seed
        )
        study = optuna.create_study(
            study_name=f"task-{ctx.task_id}",
            storage=self.storage,
            sampler=sampler,
            pruner=make_pruner(search.pruner),
            directions=search.directions,
            load_if_exists=True,
        )
        if study.metric_names is None:
            with warnings.catch_warnings():  # experimental since Optuna 3.2, still so in 5.0
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(search.objectives))
        return study

    def _enqueue_initial(self, study: optuna.Study, ctx: TaskContext, budget: int) -> None:
        """Enqueue the method's initial trials; a process killed while enqueuing left some: enqueue only the
        ones not there yet."""
        existing = [planned_decisions(tr) for tr in study.get_trials(deepcopy=False)]
        for decisions in self.method.initial_trials(ctx)[:budget]:
            if decisions not in existing:
                study.enqueue_trial(decisions, user_attrs=plan_attrs(decisions))

    def _retry_interrupted(self, study: optuna.Study) -> None:
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

    def _retrainer(self, ctx: TaskContext, macs: list[int]) -> Retrain:
        def retrain(
            graph: ModuleGraph,
            epochs: int,
            train_owner: int = FREE,
            lr_scale: float = 1.0,
            train: Split | None = None,
        ) -> ModuleGraph:
            try:
                result = train_candidate(
                    graph,
                    ctx.task_id,
                    ctx.task.train if train is None else train,
                    ctx.task.val,
                    self.space.training,
                    seed=derived_seed(self.seed, ctx.task_id, "commit"),
                    epochs=epochs,
                    train_owner=train_owner,
                    lr_scale=lr_scale,
                )
            except TrainingError as error:
                raise TrainingError(f"task {ctx.task_id}, commit's retraining: {error}") from None
            macs[0] += result.train_macs
            return result.graph

        return retrain

    # ---- the committed task's record ----------------------------------------------------------------
    def _record(
        self,
        ctx: TaskContext,
        graph: ModuleGraph,
        study: optuna.Study,
        best: FrozenTrial,
        retrain_macs: int,
        seconds: float,
    ) -> dict[str, Any]:
        t, task = ctx.task_id, ctx.task
        trials = study.get_trials(deepcopy=False)
        view = graph.view(t)
        chosen = read_record(best)
        mechanism = {
            **(chosen.mechanism if chosen else {}),
            **self.method.search_record(study, ctx),
            **self.method.commit_record(graph, ctx),
        }
        return {
            "task": t,
            "classes": list(task.classes),
            "chosen_trial": best.number,
            "decisions": chosen.decisions if chosen else dict(best.params),
            "mechanism": mechanism,
            "val_accuracy": best.values[0],
            "pareto_front": [tr.number for tr in study.best_trials] if len(study.directions) > 1 else None,
            **self._accuracy_rows(graph, t),
            "parameters": graph.n_parameters(),
            "view_parameters": graph.view_parameters(t),
            # every trial that counts (completed, pruned or failed on its own: not one a kill interrupted),
            # including what a method trained while building candidates, and the commit's retraining
            "train_macs": sum(spent_macs(tr) for tr in trials if counts_toward_budget(tr)) + retrain_macs,
            "pass_macs": 3 * graph.macs(view) * len(task.train),
            "trials": {state.name.lower(): sum(tr.state == state for tr in trials) for state in TrialState},
            "seconds": seconds,
        }

    def _accuracy_rows(self, graph: ModuleGraph, t: int) -> dict[str, Any]:
        """`accuracy_row` (what the metrics read): task-IL, or with task inference the row with the task
        inferred (class-IL or domain-IL), the task-IL row (the task given) and the gate's routing accuracy
        per task kept beside it."""
        task_il = self.accuracy_row(graph, t)
        if self.inference is None:
            return {"accuracy_row": task_il}
        inferred, routed = self.inferred_rows(graph, t)
        return {
            "accuracy_row": inferred,
            "task_il_accuracy_row": task_il,
            "task_inference_row": routed,
            "task_inference": self.method.name if self.method.infers_task else "expert-gate",
        }

    def accuracy_row(self, graph: ModuleGraph, t: int) -> list[float]:
        """Test accuracy on every task after committing task t. A task not yet learned is scored on the
        committed graph with a fresh random head on the newest path's last layer, as a multi-head model
        meets it before training (the upper triangle of the accuracy matrix)."""
        device = resolve_device(self.space.training.device)
        if self.method.single_head:  # one classifier over every class seen so far answers for every task
            return [evaluate(graph, t, task.test, device=device) for task in self.stream.tasks]
        row = []
        for j, task in enumerate(self.stream.tasks):
            view = graph if j <= t else self.untrained_view(graph, t, j, task)
            row.append(evaluate(view, j, task.test, device=device))
        return row

    def untrained_view(self, graph: ModuleGraph, t: int, j: int, task: Task) -> ModuleGraph:
        torch.manual_seed(derived_seed(self.seed, t, j, "untrained"))
        last_layer = max(graph.layer_nodes(t).items())[1]
        return ops.add_head(graph, j, last_layer, task.n_outputs)


AUTO_PACK = 16  # on a CPU, batched products stop getting cheaper per candidate beyond about this many
# measured on two cores (RCL packs of 5 on split-mnist5k): padding 1.5-2.4x still ran 1.1-2x faster than
# alone; MNTDP-D's candidates, padded about 3x, ran 0.7x
CPU_MAX_PADDING = 2.5


def free_memory(device: torch.device) -> int:
    """Bytes free on `device` (CUDA: the device's; else the machine's available memory, or half of all of
    it where the system does not say what is available, as macOS does not)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # nothing to go by: assume a small machine


def candidate_bytes(specs: Sequence[NodeSpec]) -> int:
    """A generous guess of what one packed candidate holds: twice the base network's parameters (a grown
    candidate is rarely larger), each kept about eight times (weights, gradient, optimiser state, mask, the
    values held, padding), in float32."""
    with torch.device("meta"):
        parameters = sum(p.numel() for spec in specs for p in spec.build().parameters())
    return 2 * parameters * 8 * 4


def random_init_accuracy(stream: TaskStream, specs: Sequence[NodeSpec], seed: int) -> list[float]:
    """b_j: test accuracy of a randomly initialised base network with a fresh head, per task."""
    row = []
    for j, task in enumerate(stream.tasks):
        torch.manual_seed(derived_seed(seed, j, "random-init"))
        fresh = ops.reuse_prefix(ModuleGraph(stream.input_shape), j, None, 0, specs, task.n_outputs)
        row.append(evaluate(fresh, j, task.test))
    return row


def _added_parameters(trial: FrozenTrial) -> int:
    record = read_record(trial)
    return record.added_parameters if record else 0


def committed_trial(
    study: optuna.Study, t: int, tolerance: float, score: Callable[[FrozenTrial], float]
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
