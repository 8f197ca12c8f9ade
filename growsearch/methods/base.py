"""What a method is: a search space of growth decisions, how the decided candidate is built, and a commit
policy.

A method module subclasses `Method`, sets `name`, `paper`, `scenarios` and an `Options` dataclass (its YAML
`options:` section, with the paper's defaults), and implements two steps:
- `decide(trial, ctx) -> Decisions`: sample every decision of the trial on the Optuna trial (define-by-run).
  This is all a Ray driver runs, so it must be cheap: no training here.
- `build(decisions, ctx) -> Candidate`: grow the candidate from those decisions (growth operators on a copy
  of the committed graph). This is all a worker runs; it may train (an inner search, selective
  retraining) through the one trainer, whose multiply-adds are counted automatically.
The controller then trains the candidate for `training.epochs` (as `training_plan` says, when the method
learns gates or masks, or needs hooks); `commit` runs on the chosen one (by default it freezes the task's
new nodes). A method in this package is found by its `name`; one defined
elsewhere is added with `register_method`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import optuna

from growsearch.config.schema import from_mapping
from growsearch.config.space import SearchSpace
from growsearch.graph.module_graph import ModuleGraph
from growsearch.graph.specs import NodeSpec
from growsearch.grow import operators as ops
from growsearch.grow.backbone import layer_specs
from growsearch.train.candidate import TrainingPlan

if TYPE_CHECKING:
    import torch

    from growsearch.data.memory import ExemplarMemory
    from growsearch.data.task import Split, Task
    from growsearch.inference.expert_gate import TaskAutoencoder

Decisions = dict[str, Any]  # one trial's sampled decisions: Optuna params (str, int, float or bool values)


@dataclass(frozen=True)
class NoOptions:
    """A method without settings of its own."""


@dataclass(frozen=True)
class TaskContext:
    """What a method may look at when it decides and builds candidates for task `task_id`."""

    task_id: int
    task: Task
    committed: ModuleGraph  # the graph after the previous task (only the input node before the first)
    specs: tuple[NodeSpec, ...]  # the base architecture's layers, sized for this stream's inputs
    history: tuple[dict[str, Any], ...]  # the committed decisions of every earlier task, in order
    seed: int  # the task's seed (the same for every trial of the task)
    n_tasks: int = 0  # tasks in the stream (0: unknown)
    # the candidate's decisions where a step after `build` needs them: `capacity_used` (the trial's) and
    # `commit` (the chosen trial's); empty while deciding and building
    decisions: dict[str, Any] = field(default_factory=dict)
    # ExpertGate's autoencoders of tasks 0..task_id (this task's last), where the method reads them
    # (`Method.reads_task_gates`) or the run infers the task; else empty
    gates: tuple[TaskAutoencoder, ...] = ()
    # rehearsal (`Method.exemplar_memory`): the last `exemplars` samples of `task.train` are the memory's
    # exemplars of earlier tasks' classes, trained on with the task's own samples
    exemplars: int = 0
    # a method that keeps an exemplar memory without rehearsing it (`Method.rehearses` False): the memory's
    # exemplars of earlier tasks, labelled with their task (CCGN's task classifier); else None
    memory: Split | None = None

    @property
    def is_last(self) -> bool:
        return self.n_tasks > 0 and self.task_id == self.n_tasks - 1

    @property
    def n_outputs(self) -> int:
        return self.task.n_outputs


@dataclass(frozen=True)
class Candidate:
    """What `build` returns: the grown graph the controller trains, and what the trial records about it:
    `decisions`, what the candidate is (the sampled decisions and what `build` decided from them, e.g.
    PathNet's path: the task record's "decisions"), and `mechanism`, what the method did to get there
    (a mapping, or a method's own dataclass of typed fields: units selected, generations run, ...)."""

    graph: ModuleGraph
    decisions: dict[str, Any] = field(default_factory=dict)
    mechanism: Any = field(default_factory=dict)

    def mechanism_record(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self.mechanism):
            return dataclasses.asdict(self.mechanism)
        return dict(self.mechanism)


# retrain(graph, epochs, train_owner=FREE, lr_scale=1.0, train=None) -> graph: the controller's trainer,
# for commit policies (`train`: a split of the task's own choosing, e.g. DER's class-balanced one)
Retrain = Callable[..., ModuleGraph]


class Method(ABC):
    name: ClassVar[str]
    paper: ClassVar[str]
    scenarios: ClassVar[tuple[str, ...]] = ("task-il",)
    Options: ClassVar[type] = NoOptions
    # the method's builds read each task's autoencoder (`TaskContext.gates`: ExpertGate's relatedness), so
    # the controller trains a task's gate before its search, in every scenario, and keeps it
    reads_task_gates: ClassVar[bool] = False
    # one classifier for every class seen so far (class-IL): the newest task's head answers for every
    # task, so after task t each task's test samples are scored through task t's view
    single_head: ClassVar[bool] = False
    # the method infers a test sample's task itself where the scenario hides it (`infer_task`: CCGN's task
    # classifier), so the run trains no ExpertGate gates for it
    infers_task: ClassVar[bool] = False
    # an exemplar memory's exemplars join each task's training split (rehearsal); False: the memory keeps
    # exemplars labelled with their task and the method reads them (`TaskContext.memory`)
    rehearses: ClassVar[bool] = True

    def __init__(self, space: SearchSpace):
        self.space = space
        self.options = from_mapping(self.Options, space.options, f"{space.source}: options")

    def resolved_options(self) -> dict[str, Any]:
        """The options with every default filled in (recorded in the run's config.yaml)."""
        return dataclasses.asdict(self.options)

    def specs_for(self, input_shape: tuple[int, ...]) -> tuple[NodeSpec, ...]:
        return tuple(layer_specs(self.space.layers, input_shape))

    # ---- the search ------------------------------------------------------------------------------------
    def trial_budget(self, ctx: TaskContext) -> int:
        """Trials per task: the YAML's `search.n_trials`, else the method's own (one for fixed policies).
        A method whose options have a `search` switch (a degenerate space that may be searched: HAT's s_max,
        PackNet's prune fraction) trains one candidate while it is off."""
        if getattr(self.options, "search", True) is False:
            return 1
        return self.space.search.n_trials or 1

    def sampler(self, ctx: TaskContext) -> optuna.samplers.BaseSampler | None:
        """The task's sampler; None: the one the YAML's `search.sampler` names (TPE, NSGA-II with several
        objectives)."""
        return None

    def initial_trials(self, ctx: TaskContext) -> list[Decisions]:
        """Decisions enqueued, in order, when a task's study is created (e.g. every candidate of an
        enumerative method). Their trial numbers, and so their seeds, are fixed at that moment, so a
        resumed search trains each candidate exactly as an uninterrupted one would."""
        return []

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        """Sample this trial's decisions on `trial` (define-by-run). Default: nothing to decide."""
        return {}

    @abstractmethod
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        """The candidate these decisions grow from `ctx.committed` (a new graph; the committed one is never
        changed). Randomness comes from torch's global stream, seeded per trial by the caller."""

    def pack_limit(self, ctx: TaskContext) -> int | None:
        """At most how many of the task's trials may train together (`search.pack: auto`); None: no limit
        of the method's own. A sampler that learns from finished trials samples a whole pack from what it
        knew before the pack (RCL's and CLEAS's controllers limit it)."""
        return None

    def training_plan(self, candidate: Candidate, ctx: TaskContext) -> TrainingPlan | None:
        """How the controller's training of `candidate` differs from plain training of its trainable
        weights (gates learnt, a penalty, weights held): see `TrainingPlan`. None: plain training."""
        return None

    # ---- rehearsal -------------------------------------------------------------------------------------
    def exemplar_memory(self) -> ExemplarMemory | None:
        """An empty exemplar memory of the method's size (`growsearch.data.memory`): the controller trains
        each task on its samples and the memory's, adds the task's exemplars after its commit, and keeps the
        memory in the run folder. None: no rehearsal."""
        return None

    def exemplar_features(self, graph: ModuleGraph, ctx: TaskContext, x: torch.Tensor) -> torch.Tensor | None:
        """The features herding chooses a committed task's exemplars by (iCaRL: the feature extractor's
        output); None: the flattened inputs."""
        return None

    def infer_task(self, graph: ModuleGraph, t: int, x: torch.Tensor) -> torch.Tensor:
        """With `infers_task`: the task each sample of `x` belongs to, after committing task t."""
        raise NotImplementedError(f"method {self.name} does not infer the task itself")

    # ---- after the search ------------------------------------------------------------------------------
    def selection_score(self, trial: optuna.trial.FrozenTrial) -> float:
        """How a single-objective search ranks its completed trials for the commit: validation accuracy
        by default; a method whose paper keeps the best reward (RCL, CLEAS) returns that reward."""
        return trial.values[0]

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """After the best candidate is picked: by default, freeze every node the task added."""
        return ops.freeze(chosen, [n for n, node in chosen.nodes() if node.owner == ctx.task_id])

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float | None:
        """For a method with a fixed-capacity network: the share of it the trained candidate takes from
        later tasks (an objective a search may minimise). None: the method grows instead."""
        return None

    # ---- what the task's record shows of the mechanism ---------------------------------------------------
    def search_record(self, study: optuna.Study, ctx: TaskContext) -> dict[str, Any]:
        """What the task's search as a whole did (every candidate's accuracy and size, rewards, ...), joined
        to the committed candidate's `mechanism` in the task's record. Default: nothing more."""
        return {}

    def commit_record(self, committed: ModuleGraph, ctx: TaskContext) -> dict[str, Any]:
        """What the commit policy did (capacity pruned, left free, ...), joined to the record's mechanism."""
        return {}
