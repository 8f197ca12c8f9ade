"""One task's trial, as a self-contained job: what a backend runs, in this process or on a Ray worker.

A `TrialJob` holds the method, the task context (data and committed graph), the run seed and the search's
objectives; it is small enough to ship once to the Ray object store. `decide` samples a trial's decisions on
an Optuna trial (all a Ray driver does); `run` builds the candidate from decisions, trains it with the one
trainer, and returns the trained graph, the trial's record and the values the study is told (computed
here, once, for every backend).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from growsearch.config.space import Objective
from growsearch.config.training import TrainingConfig
from growsearch.errors import TrainingError
from growsearch.graph.module_graph import ModuleGraph
from growsearch.journal_writes import together
from growsearch.methods.base import Candidate, Decisions, Method, TaskContext
from growsearch.seeds import derived_seed, seed_torch
from growsearch.train.augment import Augmentation
from growsearch.train.candidate import MAX_CACHED_BYTES, TrainingResult, train_candidate
from growsearch.train.extension import PLAIN
from growsearch.train.frozen_modules import FrozenModules
from growsearch.train.packed import NotPackable, PackMember, train_packed
from growsearch.train.prefix_cache import PrefixCache
from growsearch.train.trainer import EpochCallback, count_macs
from growsearch.trial_record import PackLayout, TrialRecord, search_position, split_layout


@dataclass(frozen=True)
class TrialOutcome:
    graph: ModuleGraph  # the trained candidate
    record: TrialRecord
    values: list[float]  # what the study is told: [accuracy, cost, ...] in the order of the objectives

    @property
    def accuracy(self) -> float:
        return self.values[0]


@dataclass(frozen=True)
class TrialFailure:
    """A trial of a pack that failed on its own: a TrainingError (a NaN loss) or a pruner's TrialPruned."""

    error: BaseException
    spent_macs: int  # what it computed before it failed


@dataclass(frozen=True)
class PackResults:
    results: list[TrialOutcome | TrialFailure]  # one per trial, in order
    layout: PackLayout | None  # the template the pack trained in (`trial_record.split_layout`: each trial's,
    # where it trained as smaller packs; None: none trained packed)


# a pack that padding refuses trains as its halves from this size (a pack of two saves a step's fixed cost
# once, which on a CPU does not pay for padding large candidates: MNTDP-D's three train one by one)
SPLIT_FROM = 4


@dataclass(frozen=True)
class TrialJob:
    method: Method
    ctx: TaskContext
    run_seed: int
    objectives: tuple[Objective, ...] = ("accuracy",)
    augmentation: Augmentation | None = None  # what each training batch goes through (None: nothing)
    # the task's frozen-prefix outputs, kept across its trials in this process (shipped empty)
    prefix_cache: PrefixCache = field(
        default_factory=lambda: PrefixCache(MAX_CACHED_BYTES), compare=False, repr=False
    )
    # and its compiled frozen nodes (the committed graph's modules)
    frozen_modules: FrozenModules = field(default_factory=FrozenModules, compare=False, repr=False)

    @property
    def task_id(self) -> int:
        return self.ctx.task_id

    @property
    def training(self) -> TrainingConfig:
        """How every candidate of the task trains (the YAML's `training:` section)."""
        return self.method.space.training

    def seed_number(self, trial: optuna.Trial) -> int:
        """The trial's position in an uninterrupted search: a retried trial takes the position (and so the
        seed) of the one that was killed, and a fresh trial after retries does not count them."""
        return search_position(trial, trial.study.get_trials(deepcopy=False))

    def decide(self, trial: optuna.Trial) -> Decisions:
        """The method's decisions for `trial`, sampled define-by-run (a Ray driver does only this); its
        params reach the journal in one append (a trial reads its params from its own cache)."""
        with together():
            return self.method.decide(trial, self.ctx)

    def run(
        self, decisions: Decisions, number: int, seed_number: int, on_epoch: EpochCallback | None = None
    ) -> TrialOutcome:
        """Build the candidate these decisions grow, train it, and measure it. A training failure (a NaN
        loss) raises a TrainingError naming the task and the trial."""
        seed = derived_seed(self.run_seed, self.task_id, seed_number)
        try:
            candidate, building_macs = self._build(decisions, seed)
            result = self._train_alone(candidate, seed, on_epoch)
        except TrainingError as error:
            raise TrainingError(f"task {self.task_id}, trial {number}: {error}") from None
        return self._outcome(candidate, result, building_macs)

    def run_pack(
        self,
        decisions: Sequence[Decisions],
        numbers: Sequence[int],
        seed_numbers: Sequence[int],
        on_epochs: Sequence[EpochCallback | None],
        layout: Sequence[Mapping[str, Any]] | None = None,
        max_padding: float | None = None,
    ) -> PackResults:
        """`run` for several trials at once: the candidates that train plainly (no `Training` of their
        own) and align into one template train as one pack (`train.packed`; in `layout`, the template of
        the pack they were first trained in, when they are its unfinished part); the others, or all of
        them when they do not align, train one by one; where padding them would multiply their compute
        by more than `max_padding`, they train as smaller packs (`_train_packs`). Each trial's outcome is
        what `run` would return, up to float rounding; a trial that fails (a NaN loss, a pruner's stop)
        fails alone, as a `TrialFailure`."""
        results: list[TrialOutcome | TrialFailure | None] = [None] * len(decisions)
        built: dict[int, tuple[Candidate, int, int]] = {}
        for i, (chosen, number, seed_number) in enumerate(zip(decisions, numbers, seed_numbers, strict=True)):
            seed = derived_seed(self.run_seed, self.task_id, seed_number)
            with count_macs() as building:
                try:
                    candidate, building_macs = self._build(chosen, seed)
                except TrainingError as error:
                    results[i] = TrialFailure(self._named(error, number), building.macs)
                    continue
            if candidate.training is None:
                built[i] = (candidate, seed, building_macs)
            else:
                results[i] = self._run_alone(candidate, seed, building_macs, number, on_epochs[i])
        layouts = self._train_packs(list(built), built, numbers, on_epochs, layout, max_padding, results)
        packs = {id(layouts[i]): layouts[i] for i in built if layouts[i] is not None}
        used_layout: PackLayout | None = None
        if len(packs) == 1 and all(layouts[i] is not None for i in built):  # one pack: its template
            used_layout = next(iter(packs.values()))
        elif packs:  # smaller packs (and some alone): each trial's template and smaller pack, by its place
            part = {key: n for n, key in enumerate(packs)}
            placed = [layouts.get(i) for i in range(len(decisions))]
            used_layout = split_layout(placed, [None if t is None else part[id(t)] for t in placed])
        return PackResults([r for r in results if r is not None], used_layout)

    def _train_packs(
        self,
        group: list[int],
        built: dict[int, tuple[Candidate, int, int]],
        numbers: Sequence[int],
        on_epochs: Sequence[EpochCallback | None],
        layout: Sequence[Mapping[str, Any]] | None,
        max_padding: float | None,
        results: list[TrialOutcome | TrialFailure | None],
    ) -> dict[int, list[dict[str, Any]] | None]:
        """Train the built candidates of `group` (indices, in trial order) as one pack, filling `results`;
        where padding them to one template would cost more than `max_padding`, a group of `SPLIT_FROM` or
        more as the packs of its first and of its second half (each judged in trial order, as the whole
        would be), a smaller one one by one. Each one's template (None: it trained alone)."""
        if not group:
            return {}
        try:
            if len(group) == 1 and layout is None:
                raise NotPackable("a pack needs two candidates that train plainly, or a recorded layout")
            if self.augmentation is not None and self.augmentation.active:
                raise NotPackable("augmented batches differ per candidate: each trains alone")
            members = [
                PackMember(built[i][0].graph, built[i][1], self._with_costs(on_epochs[i], built[i][0]))
                for i in group
            ]
            task = self.ctx.task
            packed = train_packed(
                members,
                self.task_id,
                task.train,
                task.val,
                self.training,
                layout=layout,
                max_padding=max_padding,
                prefix_cache=self.prefix_cache,
                frozen_modules=self.frozen_modules,
            )
        except NotPackable as refused:
            if refused.padding is not None and len(group) >= SPLIT_FROM:
                half, rest = group[: len(group) // 2], group[len(group) // 2 :]
                return {
                    **self._train_packs(half, built, numbers, on_epochs, None, max_padding, results),
                    **self._train_packs(rest, built, numbers, on_epochs, None, max_padding, results),
                }
            for i in group:
                candidate, seed, building_macs = built[i]
                results[i] = self._run_alone(candidate, seed, building_macs, numbers[i], on_epochs[i])
            return dict.fromkeys(group)
        for i, outcome in zip(group, packed.outcomes, strict=True):
            candidate, _, building_macs = built[i]
            if outcome.result is None:
                if not isinstance(outcome.error, TrainingError | optuna.TrialPruned):
                    raise outcome.error  # a bug in a callback surfaces as it would unpacked
                error = self._named(outcome.error, numbers[i])
                results[i] = TrialFailure(error, building_macs + outcome.train_macs)
            else:
                results[i] = self._outcome(candidate, outcome.result, building_macs)
        return dict.fromkeys(group, packed.layout)

    def _named(self, error: BaseException | None, number: int) -> BaseException:
        if isinstance(error, TrainingError):
            return TrainingError(f"task {self.task_id}, trial {number}: {error}")
        assert error is not None
        return error

    def _run_alone(
        self,
        candidate: Candidate,
        seed: int,
        building_macs: int,
        number: int,
        on_epoch: EpochCallback | None,
    ) -> TrialOutcome | TrialFailure:
        with count_macs() as spent:
            try:
                result = self._train_alone(candidate, seed, on_epoch)
            except (TrainingError, optuna.TrialPruned) as error:
                return TrialFailure(self._named(error, number), building_macs + spent.macs)
        return self._outcome(candidate, result, building_macs)

    def _build(self, decisions: Decisions, seed: int) -> tuple[Candidate, int]:
        """The candidate (its initial weights drawn from the trial's seed) and the compute building it
        spent (what a method trains while building: DEN's stages)."""
        seed_torch(seed)
        with count_macs() as building:
            candidate = self.method.build(decisions, self.ctx)
        return candidate, building.macs

    def _train_alone(self, candidate: Candidate, seed: int, on_epoch: EpochCallback | None) -> TrainingResult:
        task = self.ctx.task
        return train_candidate(
            candidate.graph,
            self.task_id,
            task.train,
            task.val,
            self.training,
            seed=seed,
            on_epoch=self._with_costs(on_epoch, candidate),
            training=candidate.training or PLAIN,
            augmentation=self.augmentation,
            prefix_cache=self.prefix_cache,
            frozen_modules=self.frozen_modules,
        )

    def _with_costs(self, on_epoch: EpochCallback | None, candidate: Candidate) -> EpochCallback | None:
        """`on_epoch`, told with each epoch the candidate's costs among the objectives that are known before
        it trains (added parameters, forward multiply-adds; `capacity_used` is measured after)."""
        if on_epoch is None:
            return None
        sizes = self._sizes(candidate.graph)
        costs = tuple(float(sizes[name]) for name in self.objectives[1:] if name in sizes)
        return lambda stats: on_epoch(dataclasses.replace(stats, costs=costs))

    def _sizes(self, graph: ModuleGraph) -> dict[str, int]:
        """What the candidate adds to the committed graph and one sample's forward pass through its view:
        fixed by its structure, so known before it trains."""
        return {
            "added_parameters": graph.n_parameters() - self.ctx.committed.n_parameters(),
            "forward_macs": graph.macs(graph.view(self.task_id)),
        }

    def _outcome(self, candidate: Candidate, result: TrainingResult, building_macs: int) -> TrialOutcome:
        record = TrialRecord(
            decisions=candidate.decisions,
            mechanism=candidate.mechanism_record(),
            **self._sizes(candidate.graph),
            view_parameters=candidate.graph.view_parameters(self.task_id),
            search_macs=building_macs,
            train_macs=result.train_macs,
            train_seconds=result.seconds,
            curve=[epoch.to_json() for epoch in result.epochs],
            capacity_used=self.method.capacity_used(
                result.graph, dataclasses.replace(self.ctx, decisions=dict(candidate.decisions))
            ),
        )
        values = [result.val_accuracy, *(float(getattr(record, name)) for name in self.objectives[1:])]
        return TrialOutcome(result.graph, record, values)
