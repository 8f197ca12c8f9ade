"""Evaluation: what a committed graph scores on every task's test samples, as the scenario plan says to
score it, and the baselines the metrics compare against: a random-init network (b_j) and, for CTrL's
transfer, an independent network trained on the last task alone.

- task-IL (the task id given): each task through its own view; a task not yet learned through the
  committed graph with a fresh random head on the newest path's last layer, as a multi-head model meets
  it before training (the upper triangle of the accuracy matrix); a one-classifier method (class-IL)
  scores every task through the newest head;
- the task inferred (class-IL, domain-IL, task-agnostic): a test sample's task is picked by the task-
  inference autoencoders, the task classifier (or the method), then that task's head names the label.
  Class-IL: right only when routed to its own task and right there, a task not yet learned scores 0.
  Domain-IL (shared labels): right whatever head names its label, so tasks not yet learned are scored too.
  The task-IL row and the share of each task's samples routed to it are kept beside the row the metrics
  read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from growsearch.config.training import TrainingConfig
from growsearch.data.task import Task, TaskStream
from growsearch.errors import TrainingError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.graph.specs import NodeSpec
from growsearch.grow import operators as ops
from growsearch.methods.base import Method
from growsearch.search.scenario_plan import ScenarioPlan
from growsearch.seeds import derived_seed, seed_torch
from growsearch.train.candidate import evaluate, resolve_device, train_candidate

Router = Callable[[torch.Tensor], torch.Tensor]  # test inputs -> the task each goes to (0..t after task t)


@dataclass(frozen=True)
class Evaluation:
    method: Method
    stream: TaskStream
    plan: ScenarioPlan
    seed: int

    @property
    def device(self) -> torch.device:
        return resolve_device(self.method.space.training.device)

    def rows(self, graph: ModuleGraph, t: int, router: Router | None) -> dict[str, Any]:
        """After committing task t: `accuracy_row` (what the metrics read) and, with the task inferred, the
        task-IL row, the routing row and what inferred the task (`router`, or the method itself)."""
        task_il = self.task_il_row(graph, t)
        if not self.plan.infers_task:
            return {"accuracy_row": task_il}
        inferred, routed = self.inferred_rows(graph, t, router)
        return {
            "accuracy_row": inferred,
            "task_il_accuracy_row": task_il,
            "task_inference_row": routed,
            "task_inference": self.plan.task_inference,
        }

    def task_il_row(self, graph: ModuleGraph, t: int) -> list[float]:
        """Test accuracy on every task after committing task t, the task id given."""
        device = self.device
        if self.plan.single_head:  # one classifier over every class seen so far answers for every task
            return [evaluate(graph, t, task.test, device=device) for task in self.stream.tasks]
        row = []
        for j, task in enumerate(self.stream.tasks):
            view = graph if j <= t else self.untrained_view(graph, t, j, task)
            row.append(evaluate(view, j, task.test, device=device))
        return row

    def untrained_view(self, graph: ModuleGraph, t: int, j: int, task: Task) -> ModuleGraph:
        seed_torch(derived_seed(self.seed, t, j, "untrained"))
        last_layer = max(graph.layer_nodes(t).items())[1]
        return ops.add_head(graph, j, last_layer, task.n_outputs)

    def inferred_rows(
        self, graph: ModuleGraph, t: int, router: Router | None
    ) -> tuple[list[float], list[float]]:
        """After task t, per task: test accuracy with the task inferred, and the share of its test samples
        routed to it."""
        device, shared = self.device, self.plan.shared_labels
        accuracy, routed_right = [], []
        heads: dict[int, torch.nn.Module] = {}
        for j, task in enumerate(self.stream.tasks):
            if len(task.test) == 0:
                accuracy.append(float("nan"))
                routed_right.append(float("nan"))
                continue
            if j > t and not shared:
                accuracy.append(0.0)
                routed_right.append(0.0)
                continue
            if self.plan.inference == "method":
                routed = self.method.infer_task(graph, t, task.test.x).cpu()
            elif router is not None:
                routed = router(task.test.x).cpu()
            else:
                raise ValueError(f"the task is inferred by {self.plan.inference}, but no router was given")
            predicted = torch.full((len(task.test),), -1, dtype=torch.long)
            for r in routed.unique().tolist():
                chosen = routed == r
                if r not in heads:  # each task's view compiled once for the whole row
                    heads[r] = compile_view(graph, r).module.to(device).eval()
                with torch.no_grad():
                    predicted[chosen] = heads[r](task.test.x[chosen].to(device)).argmax(1).cpu()
            right = predicted == task.test.y
            if not shared:
                right &= routed == j
            accuracy.append(float(right.double().mean()))
            routed_right.append(float((routed == j).double().mean()))
        return accuracy, routed_right


def random_init_accuracy(stream: TaskStream, specs: Sequence[NodeSpec], seed: int) -> list[float]:
    """b_j: test accuracy of a randomly initialised base network with a fresh head, per task."""
    row = []
    for j, task in enumerate(stream.tasks):
        seed_torch(derived_seed(seed, j, "random-init"))
        fresh = ops.reuse_prefix(ModuleGraph(stream.input_shape), j, None, 0, specs, task.n_outputs)
        row.append(evaluate(fresh, j, task.test))
    return row


def independent_accuracy(
    stream: TaskStream, specs: Sequence[NodeSpec], training: TrainingConfig, seed: int
) -> float:
    """CTrL's reference for transfer: test accuracy on the stream's last task of an independent model, the
    base network with a fresh head trained on that task alone with the run's training settings (optimiser,
    lr, epochs, batch size). Deterministic for `seed` (initial weights and batch order)."""
    j = len(stream) - 1
    task = stream.tasks[j]
    seed_torch(derived_seed(seed, j, "independent"))
    fresh = ops.reuse_prefix(ModuleGraph(stream.input_shape), j, None, 0, specs, task.n_outputs)
    try:
        trained = train_candidate(
            fresh, j, task.train, task.val, training, seed=derived_seed(seed, j, "independent-batches")
        )
    except TrainingError as error:
        raise TrainingError(
            f"the independent model on task {j} (CTrL's transfer reference): {error}"
        ) from None
    return evaluate(trained.graph, j, task.test, device=resolve_device(training.device))
