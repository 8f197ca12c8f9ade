"""Learn to Grow: a continual structure learning framework (Li, Zhou, Wu, Socher & Xiong, ICML 2019,
"Learn to Grow: A Continual Structure Learning Framework for Overcoming Catastrophic Forgetting").

Structure learning is separated from parameter learning. For a new task every layer l chooses among
  reuse: the source task's layer l, frozen;
  adapt: the frozen layer plus a small trainable adapter summed into its output;
  new:   a fresh layer of the same size.
`strategy: darts` is the paper's search: a super-network (a module graph whose layers end in `Mix` nodes)
mixes the three choices of every layer with architecture weights, trained DARTS-style with a
parameter-cost regulariser (`_learn_to_grow_darts.py`); the argmax structure is then built from the
super-network's selected parts and trained. `strategy: categorical` exposes the same space to an Optuna
sampler (`layer{i}` in reuse/adapt/new per trial).

The source is the previous task's path (the paper's S_l holds every earlier task's layer l; one source
keeps three choices per layer). A node's inputs are fixed, so reusing (or adapting) a source layer on top
of an input the source never read (after a "new" or "adapt" layer below) adds nodes that share the
layer's weights on the new input: the same function, stored once. The adapter is PNN's
`U sigma(V alpha h)` (a 1x1 reduction then the layer's own kernel for a conv layer), summed with the
frozen layer's output. Reused layers stay frozen, so old tasks never change. Task-IL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import optuna
import torch

from growsearch.methods._learn_to_grow_darts import DartsConfig, MixedLayer, darts_search
from growsearch.methods._learn_to_grow_mix import Mix
from growsearch.methods.algorithms.layer_reuse import layer_members, reuse_layer
from growsearch.methods.toolkit import (
    INPUT,
    Activation,
    Adapter,
    Candidate,
    Conv2d,
    Decisions,
    Linear,
    Method,
    ModuleGraph,
    NodeSpec,
    SearchPlan,
    Shape,
    TaskContext,
    layer_node,
    node_data,
    ops,
    require,
    task_node,
)

NEW = "new"


@dataclass(frozen=True)
class LayerSource:
    """An earlier task's version of layer l: the nodes computing `source_out` from `source_in` on the path
    of `task` (the oldest task that has it: later tasks that reused it share it)."""

    task: int
    source_in: str
    source_out: str


@dataclass(frozen=True)
class LearnToGrowOptions:
    strategy: Literal["darts", "categorical"] = "darts"
    sources: Literal["all", "previous"] = "all"  # every earlier task's layer (the paper's S_l), or the last
    search_epochs: int = 20  # epochs of the super-network search (darts)
    cost_weight: float = 0.1  # beta of the parameter-cost regulariser (darts)
    arch_lr: float = 0.01  # the architecture optimiser: Adam (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    adapter_hidden: int | None = None  # None: a tenth of the layer's width, at least 1
    warm_start: bool = True  # initialise the argmax structure from the super-network's trained parts

    def validate(self, where: str) -> None:
        require(self.search_epochs >= 1, f"{where}.search_epochs", "expected an integer >= 1")
        require(self.cost_weight >= 0, f"{where}.cost_weight", "expected a number >= 0")
        require(self.arch_lr > 0, f"{where}.arch_lr", "expected a number > 0")
        require(self.arch_weight_decay >= 0, f"{where}.arch_weight_decay", "expected a number >= 0")
        hidden = self.adapter_hidden
        require(hidden is None or hidden >= 1, f"{where}.adapter_hidden", "expected null or an integer >= 1")


def _choice(kind: str, source: LayerSource) -> str:
    return f"{kind}:t{source.task}"


class LearnToGrow(Method):
    name = "learn-to-grow"
    paper = (
        "Li, Zhou, Wu, Socher & Xiong 2019, Learn to Grow: A Continual Structure Learning Framework for "
        "Overcoming Catastrophic Forgetting (ICML)"
    )
    scenarios = ("task-il",)
    Options = LearnToGrowOptions

    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        if ctx.task_id == 0:
            return SearchPlan(budget=1)  # one structure: every layer new
        if self.options.strategy == "darts":  # the search runs inside the trial; more trials are restarts
            return SearchPlan(budget=self.space.search.n_trials or 1)
        return SearchPlan(budget=self.space.search.n_trials or 10)

    def sources(self, ctx: TaskContext, layer: int) -> dict[str, LayerSource]:
        """The distinct earlier versions of layer `layer`, oldest first, by task label ("t3")."""
        graph, tasks = ctx.committed, range(ctx.task_id)
        if self.options.sources == "previous":
            tasks = range(ctx.task_id - 1, ctx.task_id) if ctx.task_id else range(0)
        found: dict[frozenset[str], LayerSource] = {}
        for j in tasks:
            path = graph.layer_nodes(j)
            source = LayerSource(j, path.get(layer - 1, INPUT), path[layer])
            members = layer_members(graph, source.source_in, source.source_out)
            function = frozenset(graph.node(n).shares or n for n in members if graph.weights_of(n))
            found.setdefault(function, source)
        return {f"t{s.task}": s for s in found.values()}

    def choices(self, ctx: TaskContext, layer: int) -> list[str]:
        """Layer `layer`'s options: reuse each earlier version, adapt each (dense and conv layers), or new."""
        sources = list(self.sources(ctx, layer).values())
        adaptable = isinstance(ctx.specs[layer], Linear | Conv2d)
        adapt = [_choice("adapt", s) for s in sources] if adaptable else []
        return [*(_choice("reuse", s) for s in sources), *adapt, NEW]

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if self.options.strategy != "categorical" or ctx.task_id == 0:
            return {}
        return {
            f"layer{i}": trial.suggest_categorical(f"layer{i}", self.choices(ctx, i))
            for i in range(len(ctx.specs))
        }

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        decided: dict[str, Any] = {"strategy": self.options.strategy}
        if ctx.task_id == 0:
            structure = [NEW] * len(ctx.specs)
        elif self.options.strategy == "categorical":
            structure = [str(decisions[f"layer{i}"]) for i in range(len(ctx.specs))]
        else:
            return self._darts(ctx, decided)
        graph, _ = self.grow(ctx, structure)
        return Candidate(graph, {**decided, "structure": structure}, {"structure": structure})

    def _darts(self, ctx: TaskContext, decided: dict[str, Any]) -> Candidate:
        supernet, layers = self.supernet(ctx)
        config = DartsConfig(
            self.options.search_epochs,
            self.options.cost_weight,
            self.options.arch_lr,
            self.options.arch_weight_decay,
        )
        seed = int(torch.randint(2**31 - 1, ()).item())  # the trial's seed drives the search's batches
        task = ctx.task
        outcome = darts_search(
            supernet, ctx.task_id, layers, task.train, task.val, config, self.space.training, seed=seed
        )
        graph, parts = self.grow(ctx, outcome.choices)
        if self.options.warm_start:  # the new layers, adapters and head take what the search trained
            trained = {key: _trained_part(ctx, outcome.choices, key) for key in parts if key != "head"}
            trained["head"] = supernet.head(ctx.task_id)
            warm = {node_id: supernet.node(trained[key]).weights for key, node_id in parts.items()}
            graph = node_data.with_weights(graph, warm)
        decided.update(structure=outcome.choices, architecture_weights=outcome.probabilities)
        return Candidate(graph, decided, _search_record(outcome.choices, outcome.probabilities))

    # ---- the structure as a module graph --------------------------------------------------------------
    def grow(self, ctx: TaskContext, structure: list[str]) -> tuple[ModuleGraph, dict[str, str]]:
        """Task t's path for `structure` (per layer `new`, `reuse:tJ` or `adapt:tJ`), and which new node
        holds each trainable part ("i": layer i's new layer or adapter, "head")."""
        t, graph = ctx.task_id, ctx.committed.copy()
        previous, parts = INPUT, {}
        for i, (spec, choice) in enumerate(zip(ctx.specs, structure, strict=True)):
            if choice == NEW:
                node = parts[f"{i}"] = layer_node(t, i)
                graph.add(node, spec, [previous], t, layer=i)
                previous = node
                continue
            kind, _, label = choice.partition(":")
            source = self.sources(ctx, i)[label]
            base = reuse_layer(
                graph, source.source_in, source.source_out, previous, layer_node(t, i, ".reuse"), t, i
            )
            if kind == "reuse":
                previous = base
                continue
            shape = graph.shapes([previous])[previous]
            adapter = parts[f"{i}"] = layer_node(t, i, ".adapter")
            graph.add(adapter, self.adapter_spec(spec, shape), [previous], t, layer=i)
            graph.add(layer_node(t, i), Activation(None), [base, adapter], t, merge="sum", layer=i)
            previous = layer_node(t, i)
        graph = ops.add_head(graph, t, previous, ctx.n_outputs)
        parts["head"] = graph.head(t)
        return graph, parts

    def adapter_spec(self, spec: NodeSpec, input_shape: Shape) -> Adapter:
        if isinstance(spec, Conv2d):
            hidden = self.options.adapter_hidden or max(1, spec.out_channels // 10)
            return Adapter(
                input_shape[0],
                spec.out_channels,
                hidden,
                spec.kernel_size,
                spec.stride,
                spec.padding,
                spec.pool,
            )
        assert isinstance(spec, Linear)
        hidden = self.options.adapter_hidden or max(1, spec.out_features // 10)
        return Adapter(math.prod(input_shape), spec.out_features, hidden, flatten=len(input_shape) > 1)

    # ---- the super-network -----------------------------------------------------------------------------
    def supernet(self, ctx: TaskContext) -> tuple[ModuleGraph, list[MixedLayer]]:
        """The committed graph plus task t's super-network: every layer mixes each earlier version of the
        layer (frozen, shared), each of them plus an adapter, and a new layer, all reading the previous
        mixed layer. Costs are new parameters relative to a new layer's."""
        t, graph = ctx.task_id, ctx.committed.copy()
        previous, layers = INPUT, []
        for i, spec in enumerate(ctx.specs):
            shape = graph.shapes([previous])[previous]
            new = _super_id(t, i, NEW)
            graph.add(new, spec, [previous], t, layer=i)
            new_cost = graph.node(new).n_parameters
            options, costs = {NEW: new}, {NEW: 1.0}
            for label, source in self.sources(ctx, i).items():
                reuse = _choice("reuse", source)
                options[reuse] = reuse_layer(
                    graph, source.source_in, source.source_out, previous, _super_id(t, i, reuse), t, i
                )
                costs[reuse] = 0.0
                adapt = _choice("adapt", source)
                if adapt in self.choices(ctx, i):
                    adapter = _super_id(t, i, f"adapter:{label}")
                    graph.add(adapter, self.adapter_spec(spec, shape), [previous], t, layer=i)
                    options[adapt] = _super_id(t, i, adapt)
                    graph.add(
                        options[adapt], Activation(None), [options[reuse], adapter], t, merge="sum", layer=i
                    )
                    costs[adapt] = graph.node(adapter).n_parameters / new_cost
            order = self.choices(ctx, i)
            mix = task_node(t, f"super/L{i}")
            graph.add(
                mix,
                Mix(len(order), tuple(costs[c] for c in order)),
                [options[c] for c in order],
                t,
                merge="stack",
                layer=i,
            )
            layers.append(MixedLayer(mix, tuple(order)))
            previous = mix
        return ops.add_head(graph, t, previous, ctx.n_outputs), layers


def _super_id(task: int, layer: int, part: str) -> str:
    return task_node(task, f"super/L{layer}.{part}")


def _trained_part(ctx: TaskContext, choices: list[str], layer: str) -> str:
    """The super-network node whose weights layer `layer`'s chosen new layer or adapter starts from."""
    choice = choices[int(layer)]
    part = NEW if choice == NEW else f"adapter:{choice.partition(':')[2]}"
    return _super_id(ctx.task_id, int(layer), part)


def _search_record(choices: list[str], probabilities: list[dict[str, float]]) -> dict[str, Any]:
    """Per layer: the final architecture weights, the chosen option and its margin over the runner-up."""
    layers = []
    for choice, weights in zip(choices, probabilities, strict=True):
        ranked = sorted(weights.values(), reverse=True)
        margin = ranked[0] - ranked[1] if len(ranked) > 1 else 1.0
        layers.append({"choice": choice, "weights": weights, "margin": margin, "uniform": 1 / len(weights)})
    return {"layers": layers}
