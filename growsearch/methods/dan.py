"""DAN: Deep Adaptation Networks (Rosenfeld & Tsotsos, "Incremental Learning Through Deep Adaptation",
TPAMI 42(3) 2020 / arXiv:1705.04228).

The first task trains a base network (a column of new layers and a head); it is then frozen. Every later
task gets, for every base layer, a controller (the paper's term): the layer's new filters are linear
combinations of the base layer's frozen filters, W' = A W, with A (out x out) and a bias of its own, and the
task gets a new head (a `Combination` node sharing the base node, `_dan_combination.py`). A dense layer's
"filters" are its weight rows, a conv layer's are its output filters, flattened. Each task's combination
layers form its own forward path (they read the task's previous combination layer, not the base's
activations), all adapted from the base, never from another task, so old tasks are exactly unchanged and a
layer costs out^2 + out parameters instead of out * in * k^2 + out. A starts at the identity and the bias at
the base's bias, so a task's network starts as the base network. Task-IL only (the task id picks the
controllers and head: the paper's switch).

Beyond the paper, growsearch makes the growth decision a search: with `search: true` each later task
chooses per layer among `combination` (DAN's controller), `reuse` (the base layer frozen as it is, shared:
PathNet's and Learn to Grow's reuse) and `new` (a fresh layer), as Optuna's categorical `layer{i}`,
single- or multi-objective (accuracy against added parameters); the paper's structure (a combination at
every layer) is enqueued as each task's first trial. The default is the paper: one candidate per task.

Departures: the paper's switching between representations within one network (alpha), its dataset
decider, quantised controllers and batch norm per task are not modelled (task-IL: the task id selects the
path; no batch norm in growsearch's specs). The bias starting at the base's bias (the paper: a new bias)
makes the untrained task network equal the base one. A residual block has no single filter bank to
recombine: DAN refuses one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import optuna
import torch

from growsearch.methods._dan_combination import Combination
from growsearch.methods.toolkit import (
    INPUT,
    Candidate,
    ConfigError,
    Conv2d,
    Decisions,
    GraphError,
    Linear,
    Method,
    ModuleGraph,
    NodeSpec,
    SearchPlan,
    TaskContext,
    layer_node,
    ops,
    read_record,
    require,
)

BASE_TASK = 0
COMBINATION, REUSE, NEW = "combination", "reuse", "new"
Choice = Literal["combination", "reuse", "new"]


@dataclass(frozen=True)
class DANOptions:
    search: bool = False  # true: each later task searches per layer among `choices`
    choices: tuple[Choice, ...] = (COMBINATION, REUSE, NEW)  # what a layer may be when searching

    def validate(self, where: str) -> None:
        require(
            len(self.choices) >= 1 and len(set(self.choices)) == len(self.choices),
            f"{where}.choices",
            f"expected distinct choices among {COMBINATION}, {REUSE}, {NEW}, got {list(self.choices)}",
        )


class DAN(Method):
    name = "dan"
    paper = (
        "Rosenfeld & Tsotsos 2018, Incremental Learning Through Deep Adaptation (TPAMI 2020), "
        "arXiv:1705.04228"
    )
    scenarios = ("task-il",)
    Options = DANOptions
    backbones = ("mlp", "conv")
    backbone_note = "its filter recombinations are of dense or conv layers"

    def specs_for(self, input_shape: tuple[int, ...]) -> tuple[NodeSpec, ...]:
        specs = super().specs_for(input_shape)
        for i, spec in enumerate(specs):
            if not isinstance(spec, Linear | Conv2d):
                raise ConfigError(
                    f"network.layers[{i}]: dan recombines the filters of dense and conv layers; this layer "
                    f"is a {spec.kind}"
                )
        return specs

    # ---- the search ------------------------------------------------------------------------------------
    def _searches(self, ctx: TaskContext) -> bool:
        return self.options.search and ctx.task_id != BASE_TASK

    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """A later task searches (the paper's structure first, so the search always trains it); the base
        task trains one candidate."""
        if not self._searches(ctx):
            return SearchPlan(budget=1)
        paper = {f"layer{i}": COMBINATION for i in range(len(ctx.specs))}
        initial = (paper,) if COMBINATION in self.options.choices else ()
        return SearchPlan(budget=self.space.search.n_trials or 10, initial=initial)

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self._searches(ctx):
            return {}
        choices = list(self.options.choices)
        return {f"layer{i}": trial.suggest_categorical(f"layer{i}", choices) for i in range(len(ctx.specs))}

    def structure(self, decisions: Decisions, ctx: TaskContext) -> list[str]:
        if ctx.task_id == BASE_TASK:
            return [NEW] * len(ctx.specs)
        if not self.options.search:
            return [COMBINATION] * len(ctx.specs)
        return [str(decisions[f"layer{i}"]) for i in range(len(ctx.specs))]

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        structure = self.structure(decisions, ctx)
        if ctx.task_id == BASE_TASK:
            graph = ops.reuse_prefix(ctx.committed, ctx.task_id, None, 0, ctx.specs, ctx.n_outputs)
            return Candidate(graph, {"structure": structure}, {"structure": structure})
        graph = adapt_base(ctx.committed, ctx.task_id, structure, ctx.specs, ctx.n_outputs)
        decided = {"structure": structure, "base_task": BASE_TASK}
        return Candidate(graph, decided, {"structure": structure})

    # ---- what the task's record shows --------------------------------------------------------------------
    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """With the search, every trained candidate's structure, validation accuracy and size. Per layer:
        what the task's layer is, the parameters it added against a full layer's, and for a combination how
        far training moved A from the identity and the bias from the base's (relative Frobenius norms); per
        task: parameters added against a full new column's (layers and head)."""
        return {**self._search_record(study, ctx), **self._commit_record(committed, ctx)}

    def _search_record(self, study: optuna.Study, ctx: TaskContext) -> dict[str, Any]:
        if not self._searches(ctx):
            return {}
        candidates = []
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            record = read_record(trial)
            candidates.append(
                {
                    "trial": trial.number,
                    "structure": [trial.params.get(f"layer{i}") for i in range(len(ctx.specs))],
                    "val_accuracy": trial.values[0],
                    "added_parameters": record.added_parameters if record else None,
                }
            )
        return {"candidates": candidates}

    def _commit_record(self, committed: ModuleGraph, ctx: TaskContext) -> dict[str, Any]:
        t, base = ctx.task_id, committed.layer_nodes(BASE_TASK)
        layers = [_layer_record(committed, t, i, base[i]) for i in range(len(ctx.specs))]
        added = sum(layer["added_parameters"] for layer in layers)
        full_layers = sum(layer["full_layer_parameters"] for layer in layers)
        head = committed.node(committed.head(t)).n_parameters
        return {
            "layers": layers,
            "layer_parameters_added": added,
            "layer_fraction_of_base": added / full_layers,
            "added_parameters": added + head,
            "full_column_parameters": full_layers + head,
            "fraction_of_column": (added + head) / (full_layers + head),
        }


def adapt_base(
    graph: ModuleGraph, task: int, structure: list[str], specs: tuple[NodeSpec, ...], n_outputs: int
) -> ModuleGraph:
    """Task `task`'s path from the base task's frozen layers, layer i per `structure[i]`: a combination of
    the base layer's filters (identity A, the base's bias), the base layer reused as it is, or a new layer;
    then a new head."""
    grown, base = graph.copy(), graph.layer_nodes(BASE_TASK)
    previous = INPUT
    for i, (spec, choice) in enumerate(zip(specs, structure, strict=True)):
        base_node = grown.node(base[i])
        base_input = base_node.inputs[0]
        node_id = layer_node(task, i)
        if choice == COMBINATION:
            combination = Combination.over(base_node.spec)
            start = {"combination": torch.eye(_width(spec)), "bias": _bias(base_node.weights, spec)}
            grown.add(node_id, combination, [previous], task, layer=i, shares=base[i], weights=start)
        elif choice == REUSE and previous == base_input:
            node_id = base[i]  # the base's own layer on the base's own input: nothing to add
        elif choice == REUSE:
            grown.add(node_id, base_node.spec, [previous], task, layer=i, shares=base[i])
        elif choice == NEW:
            grown.add(node_id, spec, [previous], task, layer=i)
        else:
            raise GraphError(f"layer {i}'s choice {choice!r} is not one of {COMBINATION}, {REUSE}, {NEW}")
        previous = node_id
    return ops.add_head(grown, task, previous, n_outputs)


def _width(spec: NodeSpec) -> int:
    return spec.out_channels if isinstance(spec, Conv2d) else spec.out_features


def _bias(weights: dict[str, torch.Tensor], spec: NodeSpec) -> torch.Tensor:
    """The base layer's bias (its one vector), copied; zeros for a layer without one."""
    vectors = [v for v in weights.values() if v.dim() == 1]
    return vectors[0].clone() if len(vectors) == 1 else torch.zeros(_width(spec))


def _layer_record(graph: ModuleGraph, task: int, layer: int, base_id: str) -> dict[str, Any]:
    node_id = graph.layer_nodes(task)[layer]
    node, base = graph.node(node_id), graph.node(base_id)
    full = base.n_parameters
    if isinstance(node.spec, Combination):
        choice = COMBINATION
    elif node.owner != task or node.shares:  # the base layer itself, or a node sharing it
        choice = REUSE
    else:
        choice = NEW  # the base task's own layers too
    added = node.n_parameters if node.owner == task else 0
    record: dict[str, Any] = {
        "layer": layer,
        "choice": choice,
        "added_parameters": added,
        "full_layer_parameters": full,
        "fraction_of_layer": added / full,
    }
    if choice == COMBINATION:
        a = node.weights["combination"]
        identity = torch.eye(a.shape[0])
        bias, base_bias = node.weights["bias"], _bias(base.weights, base.spec)
        record["combination_change"] = float((a - identity).norm() / identity.norm())
        record["bias_change"] = float((bias - base_bias).norm() / base_bias.norm().clamp_min(1e-12))
    return record
