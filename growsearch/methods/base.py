"""What a method is: a search space of growth decisions, how the decided candidate is built and trained, and
a commit policy. The contract, with the smallest complete example, is on one page of
docs/architecture.md ("The method contract").

A method module subclasses `Method`, sets `name`, `paper`, `scenarios` and an `Options` dataclass (its YAML
`options:` section, with the paper's defaults), and implements
- `decide(trial, ctx) -> Decisions`: sample every decision of the trial on the Optuna trial (define-by-run).
  This is all a Ray driver runs, so it must be cheap: no training here.
- `build(decisions, ctx) -> Candidate`: grow the candidate from those decisions (growth operators on a copy
  of the committed graph), with its `Training` where it trains differently from plain cross-entropy. This
  is all a worker runs; it may train (an inner search, selective retraining) through the one trainer,
  whose multiply-adds are counted automatically.
- `commit(chosen, ctx, retrain)`: the policy after the search picked a candidate (default: freeze the
  task's new nodes); `record(committed, ctx, study)`: what the task's record shows of the mechanism;
  `capacity_used(graph, ctx)`: for a fixed-capacity network, the share a candidate takes.
Less common needs are one hook each, returning a small object: `search_plan` (budget, trials enqueued
first, sampler, pack limit, ranking), `rehearsal` (an exemplar memory), `infer_task` (with `infers_task`).
A method in this package is found by its `name`; one defined elsewhere is added with `register_method`.
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
from growsearch.train.extension import Training

if TYPE_CHECKING:
    import torch

    from growsearch.data.memory import ExemplarMemory
    from growsearch.data.task import Split, Task
    from growsearch.inference.autoencoders import TaskAutoencoder
    from growsearch.task_record import TaskRecord

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
    history: tuple[TaskRecord, ...]  # the committed record of every earlier task, in order
    seed: int  # the task's seed (the same for every trial of the task)
    n_tasks: int = 0  # tasks in the stream (0: unknown)
    # the candidate's decisions where a step after `build` needs them: `capacity_used` (the trial's) and
    # `commit` (the chosen trial's); empty while deciding and building
    decisions: dict[str, Any] = field(default_factory=dict)
    # the task-inference autoencoders of tasks 0..task_id (this task's last), where the method reads them
    # (`Method.reads_autoencoders`: ExpertGate's relatedness) or the run infers the task; else empty
    autoencoders: tuple[TaskAutoencoder, ...] = ()
    # rehearsal (`Method.rehearsal`): the last `exemplars` samples of `task.train` are the memory's
    # exemplars of earlier tasks' classes, trained on with the task's own samples
    exemplars: int = 0
    # a memory the method reads instead of rehearsing it (`Rehearsal.rehearsed` False): the exemplars of
    # earlier tasks, labelled with their task (CCGN's task classifier); else None
    memory: Split | None = None

    @property
    def is_last(self) -> bool:
        return self.n_tasks > 0 and self.task_id == self.n_tasks - 1

    @property
    def n_outputs(self) -> int:
        return self.task.n_outputs


@dataclass(frozen=True)
class Candidate:
    """What `build` returns: the grown graph, how it trains, and what the trial records about it.

    - `decisions`: what the candidate is (the sampled decisions and what `build` decided from them, e.g.
      PathNet's path: the task record's "decisions");
    - `mechanism`: what the method did to get there (a mapping, or a dataclass of typed fields);
    - `training`: how its training differs from plain cross-entropy on its trainable weights (gates or
      masks learnt, penalties, callbacks: `train.extension.Training`); None trains it plainly, and only
      such candidates train packed with others."""

    graph: ModuleGraph
    decisions: dict[str, Any] = field(default_factory=dict)
    mechanism: Any = field(default_factory=dict)
    training: Training | None = None

    def mechanism_record(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self.mechanism):
            return dataclasses.asdict(self.mechanism)
        return dict(self.mechanism)


@dataclass(frozen=True)
class SearchPlan:
    """How one task's search runs (`Method.search_plan`).

    - `budget`: trials for the task;
    - `initial`: decisions enqueued, in order, when the task's study is created (every candidate of an
      enumerative method, the paper's default first); their trial numbers, and so their seeds, are fixed
      then, so a resumed search trains each as an uninterrupted one would;
    - `sampler`: the task's Optuna sampler (None: the YAML's `search.sampler`, TPE or NSGA-II);
    - `pack_limit`: at most how many trials train together with `search.pack: auto` (a sampler that
      learns from finished trials samples a whole pack from what it knew before it: RCL's policy);
    - `score`: how a single-objective search ranks completed trials for the commit (None: validation
      accuracy; RCL and CLEAS keep the best reward, as their papers do)."""

    budget: int
    initial: tuple[Decisions, ...] = ()
    sampler: optuna.samplers.BaseSampler | None = None
    pack_limit: int | None = None
    score: Callable[[optuna.trial.FrozenTrial], float] | None = None


@dataclass(frozen=True)
class Rehearsal:
    """An exemplar memory (`Method.rehearsal`): the pipeline trains each task on its samples and the
    memory's (`rehearsed`), or hands the memory to the method labelled with tasks (`TaskContext.memory`:
    CCGN's task classifier); after each commit the memory takes the task's exemplars (herding on
    `features(graph, ctx, x)`, the flattened inputs when None) and is saved with the task."""

    memory: ExemplarMemory  # empty, of the method's size
    features: Callable[[ModuleGraph, TaskContext, torch.Tensor], torch.Tensor] | None = None
    rehearsed: bool = True


# retrain(graph, epochs, train_owner=FREE, lr_scale=1.0, train=None) -> graph: the pipeline's trainer, for
# commit policies (`train`: a split of the task's own choosing, e.g. DER's class-balanced one)
Retrain = Callable[..., ModuleGraph]


class Method(ABC):
    name: ClassVar[str]
    paper: ClassVar[str]
    scenarios: ClassVar[tuple[str, ...]] = ("task-il",)
    Options: ClassVar[type] = NoOptions
    # one classifier for every class seen so far (class-IL): the newest task's head answers for every
    # task, so after task t each task's test samples are scored through task t's view
    single_head: ClassVar[bool] = False
    # the method's builds read each task's task-inference autoencoder (`TaskContext.autoencoders`:
    # ExpertGate's relatedness), so one is trained before each task's search, in every scenario, and kept
    reads_autoencoders: ClassVar[bool] = False
    # the method infers a test sample's task itself where the scenario hides it (`infer_task`: CCGN's task
    # classifier), so the run trains no task-inference autoencoders for it
    infers_task: ClassVar[bool] = False
    # the backbones it grows (`grow.backbone.backbone_kind`: mlp, conv, resnet, lstm), and why not another:
    # a run on one it does not list is refused by name before anything is written
    backbones: ClassVar[tuple[str, ...]] = ("mlp", "conv", "resnet")
    backbone_note: ClassVar[str] = ""
    # search.sampler names the method serves itself beyond Optuna's (MNTDP-D's "grid": every candidate in
    # order); another method given one is refused before anything is written
    own_samplers: ClassVar[tuple[str, ...]] = ()

    def __init__(self, space: SearchSpace):
        self.space = space
        self.options = from_mapping(self.Options, space.options, f"{space.source}: options")

    def resolved_options(self) -> dict[str, Any]:
        """The options with every default filled in (recorded in the run's config.yaml)."""
        return dataclasses.asdict(self.options)

    def specs_for(self, input_shape: tuple[int, ...]) -> tuple[NodeSpec, ...]:
        """The base network's layers, sized for the stream's inputs."""
        return tuple(layer_specs(self.space.layers, input_shape))

    # ---- what most methods implement -------------------------------------------------------------------
    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        """Sample this trial's decisions on `trial` (define-by-run). Default: nothing to decide."""
        return {}

    @abstractmethod
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        """The candidate these decisions grow from `ctx.committed` (a new graph; the committed one is never
        changed), with its `training` where it trains differently. Randomness comes from torch's global
        stream, seeded per trial by the caller."""

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """After the best candidate is picked: by default, freeze every node the task added."""
        return ops.freeze(chosen, [n for n, node in chosen.nodes() if node.owner == ctx.task_id])

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """What the task's search and commit did (every candidate's accuracy and size, capacity pruned, left
        free, ...), joined to the committed candidate's `mechanism` in the task's record."""
        return {}

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float | None:
        """For a method with a fixed-capacity network: the share of it the trained candidate takes from
        later tasks (an objective a search may minimise). None: the method grows instead."""
        return None

    # ---- one hook per less common need -----------------------------------------------------------------
    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """The task's search: the YAML's `search.n_trials` (one for a fixed policy), nothing enqueued, the
        YAML's sampler. A method whose options have a `search` switch (a degenerate space that may be
        searched: HAT's s_max, PackNet's prune fraction) trains one candidate while it is off."""
        if getattr(self.options, "search", True) is False:
            return SearchPlan(budget=1)
        return SearchPlan(budget=self.space.search.n_trials or 1)

    def rehearsal(self) -> Rehearsal | None:
        """The method's exemplar memory (None: no rehearsal)."""
        return None

    def infer_task(self, graph: ModuleGraph, t: int, x: torch.Tensor) -> torch.Tensor:
        """With `infers_task`: the task each sample of `x` belongs to, after committing task t."""
        raise NotImplementedError(f"method {self.name} does not infer the task itself")
