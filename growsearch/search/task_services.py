"""Task services: what the pipeline keeps beside the grown graph, task by task, and saves with each task.

- The task-inference autoencoders (`inference.autoencoders`): one per task, trained on the task's inputs
  before its search (a method may read them: ExpertGate's relatedness), where the scenario plan infers
  the task or the method reads them; saved as `tasks/T/gate.safetensors`.
- The task classifier (`inference.task_classifier`): where it infers the task, its exemplar memory takes
  each task's samples and it is trained again over every task seen, before the task's search (it reads
  the inputs only); saved with its memory as `tasks/T/task_classifier.safetensors`.
- The exemplar memory (`Method.rehearsal`): joined to each task's training split (rehearsal) or handed to
  the method labelled with tasks; after each commit it takes the task's exemplars; saved as
  `tasks/T/memory.safetensors`.
All are seeded from the run's seed and the task, so a resumed run trains and chooses the same ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from growsearch.data.memory import ExemplarMemory
from growsearch.data.task import Split, Task, TaskStream
from growsearch.errors import CheckpointError
from growsearch.graph.module_graph import ModuleGraph
from growsearch.inference import task_classifier
from growsearch.inference.autoencoders import TaskAutoencoder, route, train_autoencoder
from growsearch.inference.task_classifier import TaskClassifier
from growsearch.methods.base import Method, TaskContext
from growsearch.search.scenario_plan import ScenarioPlan
from growsearch.seeds import derived_seed
from growsearch.store.run_folder import AUTOENCODER_FILE, MEMORY_FILE, RunFolder

Tensors = dict[str, torch.Tensor]
TASK_CLASSIFIER_FILE = "task_classifier.safetensors"  # the task classifier and its memory after a task


class TaskServices:
    def __init__(self, method: Method, stream: TaskStream, plan: ScenarioPlan, run: RunFolder, seed: int):
        self.method, self.stream, self.plan, self.run, self.seed = method, stream, plan, run, seed
        self.autoencoders: list[TaskAutoencoder] = []  # one per task learnt so far, in order
        self.task_classifier: TaskClassifier | None = None  # over the tasks learnt so far
        self.rehearsal = method.rehearsal()

    @property
    def trains_task_models(self) -> bool:
        """Whether the run trains models of the tasks before each one (autoencoders: ExpertGate's gate or task
        inference; a task classifier)."""
        return self.plan.task_classifier is not None or self.plan.autoencoders is not None

    # ---- before a task's search ---------------------------------------------------------------------
    def prepare(self, t: int) -> None:
        """Train task t's autoencoder where the run keeps them (before the search: a method may build from
        it), and the task classifier over tasks 0..t where it infers the task; seeded, so a resumed task
        trains the same ones."""
        x = self.stream.tasks[t].train.x
        if self.plan.task_classifier is not None:  # over the tasks before t (restored on resume), and t
            seed = derived_seed(self.seed, t, "task-classifier")
            self.task_classifier = task_classifier.learn_task(
                self.task_classifier, t, x, self.plan.task_classifier, seed
            )
        if self.plan.autoencoders is None:
            return
        seed = derived_seed(self.seed, t, "gate")  # the seed's tag from when the autoencoders were "gates"
        autoencoder = train_autoencoder(x, self.plan.autoencoders, seed)
        del self.autoencoders[t:]
        self.autoencoders.append(autoencoder)

    def task_data(self, t: int) -> tuple[Task, int, Split | None]:
        """Task t as the method sees it: its samples, with the memory's exemplars joined where the method
        rehearses (and how many joined); or the memory apart, labelled with tasks, where it reads it."""
        task = self.stream.tasks[t]
        memory = self.rehearsal.memory if self.rehearsal is not None else None
        if memory is None or not len(memory):
            return task, 0, None
        if self.rehearsal.rehearsed:
            return dataclasses.replace(task, train=memory.joined(task.train)), len(memory), None
        xs, _, tasks = memory.samples()
        return task, 0, Split(xs, tasks)

    def router(self, t: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """After task t: what picks each test sample's task among tasks 0..t (None: the method itself or
        the oracle)."""
        if self.plan.inference == "task-classifier" and self.task_classifier is not None:
            return self.task_classifier.route
        if self.plan.inference == "autoencoders" and self.plan.autoencoders is not None:
            gates, temperature = self.autoencoders[: t + 1], self.plan.autoencoders.temperature
            return lambda x: route(gates, x, temperature)
        return None

    def inference_cost(self) -> dict[str, int] | None:
        """What the task classifier keeps beside the method's network (None where there is none)."""
        return self.task_classifier.cost() if self.task_classifier is not None else None

    # ---- after a task's commit ----------------------------------------------------------------------
    def remember(self, t: int, graph: ModuleGraph, ctx: TaskContext) -> None:
        """Add the committed task's exemplars to the memory (herding on the method's features)."""
        if self.rehearsal is None:
            return
        train = self.stream.tasks[t].train
        features = self.rehearsal.features(graph, ctx, train.x) if self.rehearsal.features else None
        seed = derived_seed(self.seed, t, "memory")
        # a memory the method reads (not rehearsed) keeps each task's exemplars as one class: the task
        labels = train.y if self.rehearsal.rehearsed else torch.full_like(train.y, t)
        self.rehearsal.memory.add_task(t, train.x, labels, seed=seed, features=features)

    def saved(self, t: int) -> dict[str, Tensors]:
        """The files kept with committed task t (file name -> tensors)."""
        kept: dict[str, Tensors] = {}
        if self.plan.autoencoders is not None:
            kept[AUTOENCODER_FILE] = self.autoencoders[t].tensors()
        if self.task_classifier is not None:
            kept[TASK_CLASSIFIER_FILE] = self.task_classifier.tensors()
        if self.rehearsal is not None:
            kept[MEMORY_FILE] = self.rehearsal.memory.tensors()
        return kept

    # ---- a committed task, on resume ----------------------------------------------------------------
    def _kept(self, t: int, name: str, missing: str) -> dict[str, torch.Tensor]:
        """The tensors committed task t kept in `name`; a CheckpointError (the folder, then `missing`) when
        it holds none."""
        tensors = self.run.load_task_tensors(t, name)
        if tensors is None:
            raise CheckpointError(f"{self.run.task_dir(t)} {missing}")
        return tensors

    def restore(self, t: int) -> None:
        """What committed task t kept (its autoencoder, the task classifier and the memories after it),
        loaded from its folder."""
        if self.plan.task_classifier is not None:
            tensors = self._kept(
                t,
                TASK_CLASSIFIER_FILE,
                "holds no task classifier: the run was started with the task given at test time or "
                "ExpertGate's gate picking it (before the task classifier was class-IL's default); resume it "
                "with --set inference.kind=expert-gate --force",
            )
            self.task_classifier = TaskClassifier.from_tensors(tensors)
        if self.plan.autoencoders is not None:
            tensors = self._kept(
                t,
                AUTOENCODER_FILE,
                "holds no task-inference autoencoder: the run was started with the task id given at test "
                "time, or the task classifier picking it; resume it under its own scenario and "
                "inference.kind",
            )
            self.autoencoders.append(TaskAutoencoder.from_tensors(tensors))
        if self.rehearsal is not None:
            tensors = self._kept(
                t,
                MEMORY_FILE,
                f"holds no exemplar memory, which method {self.method.name} keeps after every task; the run "
                "folder was not written by this method",
            )
            restored = ExemplarMemory.from_tensors(tensors)
            self.rehearsal = dataclasses.replace(self.rehearsal, memory=restored)
