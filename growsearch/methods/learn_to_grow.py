"""Learn to Grow: a continual structure learning framework (Li, Zhou, Wu, Socher & Xiong, ICML 2019,
"Learn to Grow: A Continual Structure Learning Framework for Overcoming Catastrophic Forgetting").

Structure learning is separated from parameter learning. For a new task every layer l chooses among
  reuse: the source task's layer l, frozen;
  adapt: the frozen layer plus a small trainable adapter summed into its output;
  new:   a fresh layer of the same size.
`strategy: darts` is the paper's search: a super-network mixes the three choices of every layer with
architecture weights, trained DARTS-style with a parameter-cost regulariser (growsearch.search.darts);
the argmax structure is then built from the super-network's selected parts and trained. `strategy:
categorical` exposes the same space to an Optuna sampler (`layer{i}` in reuse/adapt/new per trial).

The source is the previous task's path (the paper's S_l holds every earlier task's layer l; one source
keeps three choices per layer). A node's inputs are fixed, so reusing (or adapting) a source layer on top
of an input the source never read (after a "new" or "adapt" layer below) uses a frozen COPY of that
layer's nodes on the new input: the same function, stored once more (recorded as `copied_parameters`).
The adapter is PNN's `U sigma(V alpha h)` (a 1x1 reduction then the layer's own kernel for a conv layer),
summed with the frozen layer's output. Reused layers stay frozen, so old tasks never change. Task-IL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import networkx as nx
import optuna
import torch
from torch import nn

from growsearch.config_schema import require
from growsearch.errors import GraphError
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.specs import Activation, Adapter, Conv2d, Linear, NodeSpec, Shape
from growsearch.grow import operators as ops
from growsearch.grow.backbone import head_spec
from growsearch.methods import register_method
from growsearch.methods.base import Method, TaskContext
from growsearch.search.darts import DartsConfig, MixedLayer, SuperNet, darts_search

CHOICES = ("reuse", "adapt", "new")


@dataclass(frozen=True)
class LearnToGrowOptions:
    strategy: Literal["darts", "categorical"] = "darts"
    search_epochs: int = 5  # epochs of the super-network search (darts)
    cost_weight: float = 0.1  # beta of the parameter-cost regulariser (darts)
    arch_lr: float = 3e-4  # DARTS' architecture optimiser: Adam (0.5, 0.999), weight decay 1e-3
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


@register_method
class LearnToGrow(Method):
    name = "learn-to-grow"
    paper = (
        "Li, Zhou, Wu, Socher & Xiong 2019, Learn to Grow: A Continual Structure Learning Framework for "
        "Overcoming Catastrophic Forgetting (ICML)"
    )
    scenarios = ("task-il",)
    Options = LearnToGrowOptions

    def trial_budget(self, ctx: TaskContext) -> int:
        if ctx.task_id == 0:
            return 1  # one structure: every layer new
        if self.options.strategy == "darts":
            return self.space.search.n_trials or 1  # the search runs inside the trial; more are restarts
        return self.space.search.n_trials or 10

    def choices(self, ctx: TaskContext, layer: int) -> list[str]:
        if ctx.task_id == 0:
            return ["new"]
        return [c for c in CHOICES if c != "adapt" or isinstance(ctx.specs[layer], Linear | Conv2d)]

    def suggest(self, trial: optuna.Trial, ctx: TaskContext) -> None:
        if self.options.strategy == "categorical" and ctx.task_id > 0:
            for i in range(len(ctx.specs)):
                trial.suggest_categorical(f"layer{i}", self.choices(ctx, i))

    def candidate(self, trial: optuna.Trial, ctx: TaskContext) -> ModuleGraph:
        source = ctx.task_id - 1 if ctx.task_id > 0 else None
        trial.set_user_attr("source_task", source)
        if ctx.task_id == 0:
            structure = ["new"] * len(ctx.specs)
        elif self.options.strategy == "categorical":
            self.suggest(trial, ctx)
            structure = [str(trial.params[f"layer{i}"]) for i in range(len(ctx.specs))]
        else:
            return self._darts(trial, ctx, source)
        trial.set_user_attr("structure", structure)
        graph, _ = self.grow(ctx, source, structure)
        trial.set_user_attr("copied_parameters", _copied_parameters(graph, ctx.task_id))
        return graph

    def _darts(self, trial: optuna.Trial, ctx: TaskContext, source: int) -> ModuleGraph:
        net, forward_macs = self.supernet(ctx, source)
        config = DartsConfig(
            self.options.search_epochs,
            self.options.cost_weight,
            self.options.arch_lr,
            self.options.arch_weight_decay,
        )
        seed = int(torch.randint(2**31 - 1, ()).item())  # the trial's seed drives the search's batches
        task = ctx.task
        outcome = darts_search(
            net, task.train, task.val, config, self.space.training, seed=seed, forward_macs=forward_macs
        )
        trial.set_user_attr("structure", outcome.choices)
        trial.set_user_attr("architecture_weights", outcome.probabilities)
        trial.set_user_attr("search_macs", outcome.macs)
        graph, parts = self.grow(ctx, source, outcome.choices)
        if self.options.warm_start:
            trained = {"head": net.head}
            for i, layer in enumerate(net.layers):
                trained[f"{i}"] = layer.op(outcome.choices[i])
            graph = _load_parts(graph, parts, trained)
        trial.set_user_attr("copied_parameters", _copied_parameters(graph, ctx.task_id))
        return graph

    # ---- the structure as a module graph --------------------------------------------------------------
    def grow(
        self, ctx: TaskContext, source: int | None, structure: list[str]
    ) -> tuple[ModuleGraph, dict[str, str]]:
        """Task t's path for `structure`, and which new node holds each trainable part ("i": layer i's new
        layer or adapter, "head")."""
        t, graph = ctx.task_id, ctx.committed.copy()
        path = graph.layer_nodes(source) if source is not None else {}
        previous, parts = INPUT, {}
        for i, (spec, choice) in enumerate(zip(ctx.specs, structure, strict=True)):
            if choice == "new":
                node = parts[f"{i}"] = f"t{t}/L{i}"
                graph.add(node, spec, [previous], t, layer=i)
                previous = node
                continue
            source_in, source_out = path.get(i - 1, INPUT), path[i]
            shared = previous == source_in  # the source layer already reads this input: share it
            base = source_out if shared else _copy_layer(graph, source_in, source_out, previous, t, i)
            if choice == "reuse":
                previous = base
                continue
            shape = graph.shapes([previous])[previous]
            adapter = parts[f"{i}"] = f"t{t}/L{i}.adapter"
            graph.add(adapter, self.adapter_spec(spec, shape), [previous], t, layer=i)
            graph.add(f"t{t}/L{i}", Activation(None), [base, adapter], t, merge="sum", layer=i)
            previous = f"t{t}/L{i}"
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
    def supernet(self, ctx: TaskContext, source: int) -> tuple[SuperNet, int]:
        """Every layer mixes the source layer (frozen), the source layer plus an adapter, and a new layer,
        all reading the previous mixed layer. Costs are new parameters relative to a new layer's."""
        graph = ctx.committed
        path = graph.layer_nodes(source)
        shape, layers, macs = graph.input_shape, [], 0
        for i, spec in enumerate(ctx.specs):
            frozen = _LayerFunction(graph, path.get(i - 1, INPUT), path[i])
            new = spec.build()
            new_cost = sum(p.numel() for p in new.parameters())
            candidates: dict[str, nn.Module] = {"reuse": frozen, "new": new}
            costs = {"reuse": 0.0, "new": 1.0}
            macs += frozen.macs + spec.macs(shape)
            if "adapt" in self.choices(ctx, i):
                adapter = self.adapter_spec(spec, shape)
                module = adapter.build()
                candidates["adapt"] = _Sum(frozen, module)
                costs["adapt"] = sum(p.numel() for p in module.parameters()) / new_cost
                macs += adapter.macs(shape)
            order = [c for c in CHOICES if c in candidates]
            layers.append(MixedLayer({c: candidates[c] for c in order}, costs))
            shape = spec.output_shape(shape)
        head = head_spec(shape, ctx.n_outputs)
        return SuperNet(layers, head.build()), macs + head.macs(shape)

    def decisions(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        attrs = trial.user_attrs
        decided = {"strategy": self.options.strategy, "structure": attrs.get("structure")}
        decided["source_task"] = attrs.get("source_task")
        if "architecture_weights" in attrs:
            decided["architecture_weights"] = attrs["architecture_weights"]
        return decided


def _layer_members(graph: ModuleGraph, source_in: str, source_out: str) -> list[str]:
    """The nodes computing `source_out` from `source_in` (one node, or an adapted layer's three)."""
    below = nx.ancestors(graph.nx, source_in) | {source_in}
    members = (nx.ancestors(graph.nx, source_out) | {source_out}) - below
    order = [n for n in graph if n in members]
    for node_id in order:
        outside = [i for i in graph.node(node_id).inputs if i not in members and i != source_in]
        if outside:
            raise GraphError(
                f"layer node {node_id!r} reads {outside}, outside its layer; it cannot be copied"
            )
    return order


def _copy_layer(
    graph: ModuleGraph, source_in: str, source_out: str, new_in: str, task: int, layer: int
) -> str:
    """Frozen copies of the nodes computing `source_out` from `source_in`, reading `new_in` instead (in
    place on `graph`, a copy the caller owns). Returns the copy of `source_out`."""
    members = _layer_members(graph, source_in, source_out)
    names = {source_in: new_in}
    for k, node_id in enumerate(members):
        node = graph.node(node_id)
        names[node_id] = f"t{task}/L{layer}.reuse" + ("" if node_id == source_out else f".{k}")
        graph.add(
            names[node_id],
            node.spec,
            [names[i] for i in node.inputs],
            task,
            merge=node.merge,
            layer=layer,
            frozen=True,
            weights={name: value.clone() for name, value in node.weights.items()},
        )
    return names[source_out]


def _copied_parameters(graph: ModuleGraph, task: int) -> int:
    return sum(node.n_parameters for n, node in graph.nodes() if node.owner == task and ".reuse" in n)


def _load_parts(graph: ModuleGraph, parts: dict[str, str], trained: dict[str, nn.Module]) -> ModuleGraph:
    """The new nodes take the weights their super-network operation trained (`adapt`: its adapter)."""
    for key, node_id in parts.items():
        module = trained[key]
        module = module.adapter if isinstance(module, _Sum) else module
        node = graph.node(node_id)
        state = module.state_dict()
        node.weights = {name: state[name].detach().to("cpu", copy=True) for name in node.weights}
    return graph


class _LayerFunction(nn.Module):
    """A source layer's nodes as one frozen module applied to any input of the right shape."""

    def __init__(self, graph: ModuleGraph, source_in: str, source_out: str):
        super().__init__()
        self.members = _layer_members(graph, source_in, source_out)
        self.inputs = {n: graph.node(n).inputs for n in self.members}
        self.merges = {n: graph.node(n).merge for n in self.members}
        self.source_in, self.source_out = source_in, source_out
        self.nodes = nn.ModuleList()
        for node_id in self.members:
            module = graph.node(node_id).spec.build()
            module.load_state_dict(graph.node(node_id).weights)
            module.requires_grad_(False)
            self.nodes.append(module)
        shapes = graph.shapes([source_out])
        self.macs = sum(graph.node(n).spec.macs(graph.merged_input_shape(n, shapes)) for n in self.members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.source_in: x}
        for node_id, module in zip(self.members, self.nodes, strict=True):
            args = [values[i] for i in self.inputs[node_id]]
            if len(args) == 1:
                merged = args[0]
            elif self.merges[node_id] == "sum":
                merged = torch.stack(args).sum(0)
            else:
                merged = torch.cat(args, dim=1)
            values[node_id] = module(merged)
        return values[self.source_out]


class _Sum(nn.Module):
    """The adapt choice: a frozen layer's output plus a trainable adapter's, both reading the same input."""

    def __init__(self, frozen: nn.Module, adapter: nn.Module):
        super().__init__()
        self.frozen, self.adapter = frozen, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(x) + self.adapter(x)
