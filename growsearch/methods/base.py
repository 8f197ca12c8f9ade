"""What a method is: a search space of growth decisions, a sampler, and a commit policy.

A method module subclasses `Method`, sets `name`, `paper`, `scenarios` and an `Options` dataclass (its
YAML `options:` section, with the paper's defaults), implements `candidate` (define-by-run on an Optuna
trial: sample decisions, apply growth operators to a copy of the committed graph) and, when it needs more
than freezing the task's new nodes, `commit`. It registers itself with `@register_method`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import optuna

from growsearch.graph.module_graph import FREE, ModuleGraph
from growsearch.graph.specs import NodeSpec
from growsearch.grow import operators as ops
from growsearch.grow.backbone import layer_specs
from growsearch.search.samplers import make_sampler

if TYPE_CHECKING:
    from growsearch.data.task import Task
    from growsearch.search.space import SearchSpace


@dataclass(frozen=True)
class NoOptions:
    """A method without settings of its own."""


@dataclass(frozen=True)
class TaskContext:
    """What a method may look at when it proposes candidates for task `task_id`."""

    task_id: int
    task: Task
    committed: ModuleGraph  # the graph after the previous task (only the input node before the first)
    specs: tuple[NodeSpec, ...]  # the base architecture's layers, sized for this stream's inputs
    decisions: tuple[dict[str, Any], ...]  # the committed decisions of every earlier task, in order
    seed: int

    @property
    def n_outputs(self) -> int:
        return self.task.n_outputs


# retrain(graph, epochs, train_owner, lr_scale) -> graph: the controller's trainer, for commit policies
Retrain = Callable[[ModuleGraph, int, int, float], ModuleGraph]


class Method(ABC):
    name: ClassVar[str]
    paper: ClassVar[str]
    scenarios: ClassVar[tuple[str, ...]] = ("task-il",)
    Options: ClassVar[type] = NoOptions

    def __init__(self, space: SearchSpace):
        self.space = space
        self.options = space.options

    def specs_for(self, input_shape: tuple[int, ...]) -> tuple[NodeSpec, ...]:
        return tuple(layer_specs(self.space.layers, input_shape))

    def trial_budget(self, ctx: TaskContext) -> int:
        """Trials per task: the YAML's `search.n_trials`, else the method's own (one for fixed policies)."""
        return self.space.search.n_trials or 1

    def sampler(self, ctx: TaskContext) -> optuna.samplers.BaseSampler:
        default = "nsga2" if self.space.search.multi_objective else "tpe"
        return make_sampler(self.space.search.sampler or default, seed=ctx.seed)

    def initial_trials(self, ctx: TaskContext) -> list[dict[str, Any]]:
        """Decisions enqueued, in order, when a task's study is created (e.g. every candidate of an
        enumerative method). Their trial numbers, and so their seeds, are fixed at that moment, so a
        resumed search trains each candidate exactly as an uninterrupted one would."""
        return []

    @abstractmethod
    def candidate(self, trial: optuna.Trial, ctx: TaskContext) -> ModuleGraph:
        """Sample this trial's decisions and return the grown candidate (a new graph). It may train
        (an inner search, selective retraining); the trainer then trains what it returns for
        `training.epochs`. Attributes set with `trial.set_user_attr` are recorded on the trial."""

    def suggest(self, trial: optuna.Trial, ctx: TaskContext) -> None:
        """Only sample this trial's decisions (a Ray driver does this; a worker then builds the candidate
        from them). The default runs `candidate` and drops the graph: override it when `candidate` is
        expensive (it trains) so the driver does not do the work twice."""
        self.candidate(trial, ctx)

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """After the best candidate is picked: by default, freeze every node the task added."""
        return ops.freeze(chosen, [n for n, node in chosen.nodes() if node.owner == ctx.task_id])

    def selection_score(self, trial: optuna.trial.FrozenTrial) -> float:
        """How a single-objective search ranks its completed trials for the commit: validation accuracy
        by default; a method whose paper keeps the best reward (RCL, CLEAS) returns that reward."""
        return trial.values[0]

    def decisions(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """What the committed trial decided, recorded per task (the trial's parameters by default)."""
        return dict(trial.params)


def trainable_free(graph: ModuleGraph) -> int:
    """Owner-tracked entries still free: the capacity weight-level methods have left."""
    return sum(int((owners == FREE).sum()) for _, node in graph.nodes() for owners in node.owners.values())
