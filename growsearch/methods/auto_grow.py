"""auto-grow: one search per task over the survey's growth moves, so the search chooses which method's move
a task gets, and with which parameters.

Every task's space is the union of the moves of `_auto_grow_moves` on one module graph, sampled define-by-
run: first the move, then its own parameters (`decide`):
- `reuse_below` (MNTDP): `reuse_below_source`, `reuse_below_depth` k in 1..L (k = L: a new head only);
- `reuse_above` (new inputs, old labels): `reuse_above_source`, `reuse_above_depth` (new layers below it),
  `reuse_above_head` (share the source's head where it has as many outputs);
- `column` (PNN): `column_laterals` (adapters from the earlier frozen paths, where there are any);
- `widen` (RCL, DEN): `widen_source`, `widen_units` per layer;
- `backbone` (PackNet): `prune_fraction` of the weights it trained, pruned at the commit;
- `compact` (CPG): the backbone with a mask picking the earlier backbone tasks' weights, its own weights
  pruned gradually to `compact_sparsity` while it trains (at least CPG's must-prune ratio);
- `mask` (Piggyback): `mask_source`;
- `adapt` (Learn to Grow): `adapt_source`.
A move's source is one of the earlier tasks, in the order of MNTDP's task-driven prior (a kNN on each path's
features of the new task, `algorithms.task_prior`; at most `options.sources` of them): a frozen path for every
sourced move, a backbone task's view for `reuse_below` and `reuse_above`. The search is multi-objective by
default (validation accuracy against added parameters, TPE; the YAML may name NSGA-II or add multiply-adds),
with the commit rule every method has: among the Pareto points within `search.accuracy_tolerance` of the best
accuracy, the cheapest. Its first trials are enqueued: each move's default from the prior's best source, and
the move the most similar earlier task committed, taken from that task. The first task has no earlier path and
every first move builds the same network there: it starts the compacting backbone when `compact` is open (its
pruned share leaves the rest of the width to later tasks, where a column would give all of it to one task),
else it tries each first move once. The task's record says what was chosen (`mechanism`: the move, its
parameters, the source; a compaction's stages) and the best candidate of every other move with its accuracy
and size (`alternatives`).

A combination of moves of the survey's methods, not a method of the survey: its parts follow their papers
as the methods here do (the backbone retrains at a tenth of the rate after pruning, PackNet's; masks start
at 1e-2 against a 5e-3 threshold, Piggyback's and CPG's; adapters are a tenth of their layer, Learn to
Grow's). Departures in `compact`: CPG prunes in stages after training, keeping the sparsest stage that meets
an individual model's accuracy; here the sparsity is the search's decision and the pruning ramps inside the
candidate's own training (so the search scores the compacted candidate at the cost of any other); the
backbone does not grow, so the sparsity is at least CPG's must-prune ratio (the authors' rule at the widest
network: room for the remaining tasks), and a task that finds it full takes another move; the free weights a
task trains are drawn afresh (pruning left them zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from growsearch.methods import _auto_grow_moves as moves
from growsearch.methods.algorithms import compacting
from growsearch.methods.algorithms.compacting import MaskSettings
from growsearch.methods.algorithms.task_prior import PriorChoice, choose_source
from growsearch.methods.toolkit import (
    Candidate,
    ConfigError,
    Conv2d,
    Decisions,
    Linear,
    Method,
    ModuleGraph,
    NodeSpec,
    Retrain,
    SearchPlan,
    TaskContext,
    halving_stop,
    ops,
    read_record,
    require,
)


@dataclass(frozen=True)
class AutoGrowOptions:
    moves: tuple[str, ...] = moves.MOVES  # the moves the search may choose from
    sources: int = 2  # earlier tasks a sourced move may start from: the prior's best first
    widen_units: tuple[int, int] = (4, 64)  # units a widening adds per layer
    widen_default: int = 16
    prune_range: tuple[float, float] = (0.3, 0.9)  # the backbone's pruned share of what a task trained
    prune_default: float = 0.5  # PackNet's first fraction
    retrain_epochs: int = 2  # the backbone's retraining after pruning (PackNet's)
    retrain_lr_scale: float = 0.1
    mask_init: float = 1e-2  # Piggyback's and CPG's picking mask
    mask_threshold: float = 5e-3
    compact_range: tuple[float, float] = (0.5, 0.95)  # the share of its trained weights a task prunes
    compact_default: float = 0.9
    compact_every: int = 2  # steps between pruning updates (CPG's authors: 10 iterations)
    adapter_hidden: int | None = None  # None: a tenth of the layer's units (Learn to Grow's)

    def validate(self, where: str) -> None:
        unknown = sorted(set(self.moves) - set(moves.MOVES))
        known = ", ".join(moves.MOVES)
        require(not unknown, f"{where}.moves", f"expected moves among {known}; got {unknown}")
        first = set(self.moves) & {"column", "backbone", "compact"}  # the first task has no earlier path
        require(
            bool(first),
            f"{where}.moves",
            "expected column, backbone or compact among them, for the first task",
        )
        require(self.sources >= 1, f"{where}.sources", "expected an integer >= 1")
        low, high = self.widen_units
        fits = 1 <= low <= self.widen_default <= high
        require(fits, f"{where}.widen_units", "expected 1 <= low <= widen_default <= high")
        low_f, high_f = self.prune_range
        fits = 0 <= low_f <= self.prune_default <= high_f < 1
        require(fits, f"{where}.prune_range", "expected 0 <= low <= prune_default <= high < 1")
        require(self.retrain_epochs >= 0, f"{where}.retrain_epochs", "expected an integer >= 0")
        require(self.retrain_lr_scale > 0, f"{where}.retrain_lr_scale", "expected a number > 0")
        require(self.mask_init > self.mask_threshold >= 0, f"{where}.mask_init", "expected init > threshold")
        low_c, high_c = self.compact_range
        fits = 0 <= low_c <= self.compact_default <= high_c < 1
        require(fits, f"{where}.compact_range", "expected 0 <= low <= compact_default <= high < 1")
        require(self.compact_every >= 1, f"{where}.compact_every", "expected an integer >= 1")
        hidden = self.adapter_hidden
        require(hidden is None or hidden >= 1, f"{where}.adapter_hidden", "expected null or an integer >= 1")


class AutoGrow(Method):
    name = "auto-grow"
    paper = "a search over the survey's growth moves per task (MNTDP's task-driven prior orders the sources)"
    scenarios = ("task-il",)
    Options = AutoGrowOptions
    backbones = ("mlp", "conv")
    backbone_note = "its moves grow dense and conv layers"

    def specs_for(self, input_shape: tuple[int, ...]) -> tuple[NodeSpec, ...]:
        specs = super().specs_for(input_shape)
        other = [s.kind for s in specs if not isinstance(s, Linear | Conv2d)]
        if other:
            raise ConfigError(
                f"{self.space.source}: network.layers: auto-grow's moves grow dense and conv layers, not "
                f"{', '.join(sorted(set(other)))}"
            )
        return specs

    # ---- the task's space ------------------------------------------------------------------------------
    def prior(self, ctx: TaskContext) -> PriorChoice | None:
        """MNTDP's prior over the earlier frozen paths (the same for every trial of a task)."""
        earlier = moves.source_paths(ctx.committed, ctx.task_id)
        if not earlier:
            return None
        cache = self.__dict__.setdefault("_prior", {})
        if ctx.task_id not in cache:
            cache[ctx.task_id] = choose_source(ctx.committed, ctx.task, earlier, ctx.seed)
        return cache[ctx.task_id]

    def sources(self, ctx: TaskContext, move: str) -> list[int]:
        """The sources `move` may start from: eligible earlier frozen paths, the prior's best first."""
        prior = self.prior(ctx)
        if prior is None:
            return []
        ranked = sorted(prior.scores, key=lambda j: (-prior.scores[j], -j))
        return [j for j in ranked if moves.eligible(move, ctx, j)][: self.options.sources]

    def moves(self, ctx: TaskContext) -> list[str]:
        """The moves open to the task: those needing a source only where one is eligible."""
        return [m for m in self.options.moves if m not in moves.SOURCED or self.sources(ctx, m)]

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        move = trial.suggest_categorical("move", self.moves(ctx))
        decisions: Decisions = {"move": move}
        if move in moves.SOURCED:
            key = f"{move}_source"
            decisions[key] = trial.suggest_categorical(key, self.sources(ctx, move))
        options, depth = self.options, len(ctx.specs)
        if move == "reuse_below":
            decisions["reuse_below_depth"] = trial.suggest_int("reuse_below_depth", 1, depth)
        elif move == "reuse_above":
            decisions["reuse_above_depth"] = trial.suggest_int("reuse_above_depth", 1, depth)
            decisions["reuse_above_head"] = trial.suggest_categorical("reuse_above_head", [True, False])
        elif move == "column" and moves.frozen_paths(ctx.committed, ctx.task_id):
            decisions["column_laterals"] = trial.suggest_categorical("column_laterals", [True, False])
        elif move == "widen":
            decisions["widen_units"] = trial.suggest_int("widen_units", *options.widen_units, log=True)
        elif move == "backbone":
            decisions["prune_fraction"] = trial.suggest_float("prune_fraction", *options.prune_range)
        elif move == "compact":
            decisions["compact_sparsity"] = trial.suggest_float("compact_sparsity", *self.compact_range(ctx))
        return decisions

    def compact_range(self, ctx: TaskContext) -> tuple[float, float]:
        """The sparsities a compacting task may take: the YAML's range, from CPG's must-prune ratio up."""
        low, high = self.options.compact_range
        return min(max(low, compacting.must_prune_ratio(ctx)), high), high

    # ---- the candidate ---------------------------------------------------------------------------------
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        move, options = str(decisions["move"]), self.options
        source = decisions.get(f"{move}_source")
        source = None if source is None else int(source)
        training = None
        chosen: dict[str, Any] = {}
        if move == "reuse_below":
            chosen["depth"] = int(decisions["reuse_below_depth"])
            graph, training = moves.reuse_below(ctx, source, chosen["depth"])
        elif move == "reuse_above":
            chosen["depth"] = int(decisions["reuse_above_depth"])
            chosen["share_head"] = bool(decisions["reuse_above_head"]) and moves.shares_head(ctx, source)
            graph = moves.reuse_above(ctx, source, chosen["depth"], chosen["share_head"])
        elif move == "column":
            chosen["laterals"] = bool(decisions.get("column_laterals", False))
            graph = moves.column(ctx, chosen["laterals"])
        elif move == "widen":
            chosen["units"] = int(decisions["widen_units"])
            graph = moves.widen(ctx, source, chosen["units"])
        elif move == "backbone":
            chosen["prune_fraction"] = float(decisions["prune_fraction"])
            graph = moves.backbone(ctx)
        elif move == "compact":
            chosen["sparsity"] = float(decisions["compact_sparsity"])
            masks = MaskSettings(options.mask_init, options.mask_threshold)
            epochs = self.space.training.epochs
            graph, training = moves.compact(ctx, chosen["sparsity"], epochs, masks, options.compact_every)
        elif move == "mask":
            graph, training = moves.mask(ctx, source, options.mask_init, options.mask_threshold)
        else:
            graph = moves.adapt(ctx, source, options.adapter_hidden)
        mechanism = {"move": move, "source": source, "parameters": chosen, **_prior_record(self.prior(ctx))}
        return Candidate(graph, dict(decisions), mechanism, training)

    # ---- the commit ------------------------------------------------------------------------------------
    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """The backbone's share: what the task trained pruned by its fraction, the rest claimed and retrained
        (PackNet's); compacted and claimed while it trained (CPG's): its head frozen; any other move: its new
        nodes frozen."""
        move = ctx.decisions.get("move")
        if move == "compact":
            return ops.freeze(chosen, [chosen.head(ctx.task_id)])
        if move != "backbone":
            return super().commit(chosen, ctx, retrain)
        t, shared = ctx.task_id, moves.backbone_nodes(len(ctx.specs))
        graph = ops.prune(chosen, t, float(ctx.decisions["prune_fraction"]), shared)
        biases = {name for n in shared for name, w in graph.node(n).weights.items() if w.dim() == 1}
        graph = ops.claim_free(graph, t, shared, params=biases)  # the first backbone task's biases
        if self.options.retrain_epochs > 0:
            graph = retrain(graph, self.options.retrain_epochs, t, self.options.retrain_lr_scale)
        return ops.freeze(graph, [graph.head(t)])

    # ---- what the search chose, and what it passed over -------------------------------------------------
    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        initial = tuple(self.first_trials(ctx))
        if ctx.task_id == 0:  # no earlier path: the compacting backbone, else each first move once
            if "compact" in self.options.moves:
                initial = tuple(t for t in initial if t["move"] == "compact")
            return SearchPlan(budget=len(initial), initial=initial)
        return SearchPlan(budget=max(self.space.search.n_trials or 10, 1), initial=initial)

    def first_trials(self, ctx: TaskContext) -> list[Decisions]:
        """Each open move's default from the prior's best source, then the move the most similar earlier
        task committed, started from that task."""
        options, depth, open_moves = self.options, len(ctx.specs), self.moves(ctx)
        best = {m: self.sources(ctx, m)[0] for m in open_moves if m in moves.SOURCED}
        laterals = bool(moves.frozen_paths(ctx.committed, ctx.task_id))  # a column's laterals read those
        defaults: dict[str, list[Decisions]] = {
            # a new head on the whole source path, then new upper layers from the last one
            "reuse_below": [
                {"reuse_below_depth": k} for k in sorted({depth, max(depth - 1, 1)}, reverse=True)
            ],
            "reuse_above": [{"reuse_above_depth": 1, "reuse_above_head": True}],
            "column": [{"column_laterals": True}] if laterals else [{}],
            "widen": [{"widen_units": options.widen_default}],
            "backbone": [{"prune_fraction": options.prune_default}],
            "compact": [{"compact_sparsity": max(options.compact_default, self.compact_range(ctx)[0])}],
            "mask": [{}],
            "adapt": [{}],
        }
        trials = []
        for move in open_moves:
            source = {f"{move}_source": best[move]} if move in best else {}
            trials += [{"move": move, **source, **params} for params in defaults[move]]
        similar = self._similar_move(ctx, open_moves)
        if similar is not None and similar not in trials:
            trials.append(similar)
        return trials

    def _similar_move(self, ctx: TaskContext, open_moves: list[str]) -> Decisions | None:
        """The move the prior's best source committed, started from that task (None where it cannot be)."""
        prior = self.prior(ctx)
        if prior is None or not ctx.history:
            return None
        decided = dict(ctx.history[prior.source].decisions)
        move = decided.get("move")
        if move not in open_moves:
            return None
        if move in moves.SOURCED:
            if prior.source not in self.sources(ctx, move):
                return None
            decided[f"{move}_source"] = prior.source
        if move == "column" and not moves.frozen_paths(ctx.committed, ctx.task_id):
            decided.pop("column_laterals", None)
        return decided

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per move, the best candidate the search trained: its trial, accuracy, size and decisions. A
        trained candidate ranks above one successive halving stopped (`stopped_after_epochs`: its accuracy
        is the one it had there)."""
        best: dict[str, dict[str, Any]] = {}
        ranks: dict[str, tuple[bool, float, int]] = {}
        costs = self.space.search.objectives[1:]
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            move, stop = trial.params.get("move"), halving_stop(trial)
            if trial.state == TrialState.COMPLETE:
                record = read_record(trial)
                added = record.added_parameters if record else None
                entry = {"trial": trial.number, "val_accuracy": trial.values[0], "added_parameters": added}
            elif stop is not None:
                epochs, point = stop
                added = int(point[1]) if costs[:1] == ("added_parameters",) else None
                entry = {"trial": trial.number, "val_accuracy": point[0], "added_parameters": added}
                entry["stopped_after_epochs"] = epochs
            else:
                continue
            rank = (stop is None, entry["val_accuracy"], -(entry["added_parameters"] or 0))
            if move not in best or rank > ranks[move]:
                best[move], ranks[move] = {**entry, "decisions": dict(trial.params)}, rank
        capacity = {}  # on the backbone: per layer, the share each task owns, picks and leaves free
        if moves.on_backbone(committed, ctx.task_id):
            capacity = {"capacity": compacting.capacity(committed, ctx)}
        return {**capacity, "alternatives": dict(sorted(best.items()))}


def _prior_record(choice: PriorChoice | None) -> dict[str, Any]:
    if choice is None:
        return {}
    return {"prior_scores": {str(j): s for j, s in choice.scores.items()}}
