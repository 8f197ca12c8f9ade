"""CCGN: conditional channel gated networks for task-aware continual learning (Abati, Tomczak, Blankevoort,
Calderara, Cucchiara & Ehteshami Bejnordi, CVPR 2020, arXiv:2004.00070).

One network shared by every task, and per task a head and, on every hidden layer, a gating module that
decides per input which of the layer's output channels (dense: units) fire (sec. 3.1): the layer's input,
average-pooled for a conv layer (globally, as in the paper, once it has `gate_summary` channels), goes
through an MLP with one hidden layer of `gate_hidden` units, batch-normalised (`gate_batch_norm`), to a
logit pair per channel; training samples binary gates by Gumbel-softmax (temperature `temperature`) with
the straight-through estimator, evaluation takes the larger logit (hard 0/1); the record gives per layer
how far the gates depend on the input (`input_dependent`, `patterns`, `class_mask`). In the graph a task's
gated path is one `ConditionalGate` node per shared layer (`t{task}/gate{i}`, see `_ccgn_channel_gates.py`):
it runs the shared layer and gates its output, its gating module stored as its weights. The sparsity objective
(sec. 3.2) adds lambda_s times the share of open gates (per layer, averaged over the batch, then over the
layers) to the cross-entropy. After a task (sec. 3.2), its gates' firing on its validation data picks its
important channels (fired for more than `firing_threshold` of the samples); these are frozen in the shared
layers (each one's whole kernel and bias, held exactly by train masks for every later task), the others stay
free and are re-initialised for the next task. Later tasks may open frozen channels (reuse, read-only).

Task-IL; in class-IL and domain-IL (and task-agnostic) the task of a test sample is inferred by the
paper's own route (sec. 3.3, `_ccgn_task_classifier.py`): a task classifier over every task's gated
features, trained again after each task on an episodic memory (`memory_size` exemplars, an equal share per
task, kept in the run folder) and the task's samples; a sample's task and class are picked together,
`log p(y|x) = log p(y|x,t) + log p(t|x)`.

The search (`search: true`): each task samples lambda_s log-uniformly in `sparsity_range`, the default
enqueued first; single-objective, or against `capacity_used` (the share of the free channels the task
freezes). `search: false` (the default) trains the paper's configuration once per task.

Defaults: lambda_s 0.5, 16 hidden units, temperature 2/3 follow the public reimplementation (ChannelGatedCL,
`lambda_sparse`, `create_gate_fc`, `tau=2/3`); we could not check them against the paper's appendix here.
Departures, each for a reason: once a task is committed its gates may open only its important channels
(`allowed` on its gate nodes; the paper leaves a gate free to open a re-initialised channel), so an old
task's outputs are bit-identical after later tasks, for every input, not only the validation samples that
picked the channels; the default threshold is 0 (any firing is important), so the restriction changes no
validation prediction. A conv input with fewer than `gate_summary` (16) channels, the one-channel image
before the first layer, is average-pooled to the smallest square grid giving that many features (an 8x8
digit: 4x4 cells) instead of to one number a channel: globally pooled, the first gate reads the image's mean
ink alone and cannot tell one digit from another. The gating MLP's hidden units are batch-normalised, as in
the reimplementation (`USE_BATCHNORM_GATES`, on there; whether the paper does could not be read), but with
running statistics at test and in a frozen module (the reimplementation keeps none: a test sample's gates
would depend on its batch). Without the normalisation the hidden layer's bias carries a constant to the
logits, which saturate (|logit gap| 4-23, its spread over samples 0.04-1.5) and the gates open one
mask for every input (13-15 of split digits' 15 task-layer gates); with both changes none does (README).
Dense layers are gated like conv layers (the paper gates convolutions; growsearch's backbones may
end with dense layers). No validation-driven schedule: `training.epochs` fixed; `sparsity_warmup` (the
reimplementation's `sparsity_patience_epochs`) is off by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from growsearch.methods import _ccgn_channel_gates as channel_gates
from growsearch.methods._ccgn_gate_firing import GateFiring, gate_firing
from growsearch.methods._ccgn_task_classifier import infer_tasks, train_task_classifier
from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    ExemplarMemory,
    Method,
    ModuleGraph,
    Rehearsal,
    Retrain,
    SearchPlan,
    Split,
    TaskContext,
    Training,
    TrainingRun,
    derived_seed,
    node_data,
    ops,
    require,
    unit_gates,
)

PREFIX = "shared"


@dataclass(frozen=True)
class CCGNOptions:
    sparsity: float = 0.5  # lambda_s, the sparsity objective's weight
    gate_hidden: int = 16  # the gating MLP's hidden units
    gate_summary: int = 16  # the gating MLP reads at least this many features (a conv input: a pooled grid)
    gate_batch_norm: bool = True  # batch norm on the gating MLP's hidden units (the reimplementation's)
    temperature: float = 2 / 3  # the Gumbel-softmax temperature
    sparsity_warmup: int = 0  # epochs at the start of each task without the sparsity objective
    firing_threshold: float = 0.0  # a channel is important when it fires for more of the validation samples
    reinitialise_free: bool = True  # the paper: channels left free start again for the next task
    search: bool = False  # true: each task searches lambda_s
    sparsity_range: tuple[float, float] = (0.05, 5.0)
    # class-IL: the task classifier (sec. 3.3), trained after each task on the episodic memory and the task
    memory_size: int = 200  # exemplars in all, an equal share per task
    classifier_hidden: int = 64  # the task classifier's hidden units (0: linear)
    classifier_epochs: int = 30
    classifier_lr: float = 0.01

    def validate(self, where: str) -> None:
        require(self.sparsity >= 0, f"{where}.sparsity", "expected a number >= 0")
        require(self.sparsity_warmup >= 0, f"{where}.sparsity_warmup", "expected an integer >= 0")
        require(self.gate_hidden >= 1, f"{where}.gate_hidden", "expected an integer >= 1")
        require(self.gate_summary >= 1, f"{where}.gate_summary", "expected an integer >= 1")
        require(self.temperature > 0, f"{where}.temperature", "expected a number > 0")
        require(0 <= self.firing_threshold < 1, f"{where}.firing_threshold", "expected a number in [0, 1)")
        require(self.memory_size >= 1, f"{where}.memory_size", "expected an integer >= 1")
        require(self.classifier_hidden >= 0, f"{where}.classifier_hidden", "expected an integer >= 0")
        require(self.classifier_epochs >= 1, f"{where}.classifier_epochs", "expected an integer >= 1")
        require(self.classifier_lr > 0, f"{where}.classifier_lr", "expected a number > 0")
        low, high = self.sparsity_range
        require(
            0 < low <= self.sparsity <= high,
            f"{where}.sparsity_range",
            f"expected [low, high] with 0 < low <= sparsity ({self.sparsity}) <= high",
        )


class Sparsity:
    """The sparsity objective (sec. 3.2): lambda_s times the mean share of open gates of the training
    batch, over the task's gate nodes, from the step after `warmup_epochs` epochs."""

    def __init__(self, gate_nodes: Sequence[str], weight: float, warmup_epochs: int):
        self.gate_nodes, self.weight, self.warmup_epochs = list(gate_nodes), weight, warmup_epochs
        self.gating: list[torch.nn.Module] = []
        self.warmup = self.step = 0

    def start(self, run: TrainingRun) -> None:
        self.gating = [run.program.full.node_modules[node_id] for node_id in self.gate_nodes]
        self.warmup = self.warmup_epochs * run.steps_per_epoch

    def before_step(self, step: int) -> None:
        self.step = step

    def penalty(self) -> torch.Tensor:
        weight = self.weight if self.step > self.warmup else 0.0
        return weight * torch.stack([module.last_gates.mean() for module in self.gating]).mean()


class CCGN(Method):
    name = "ccgn"
    paper = (
        "Abati, Tomczak, Blankevoort, Calderara, Cucchiara & Ehteshami Bejnordi 2020, Conditional Channel "
        "Gated Networks for Task-Aware Continual Learning (CVPR), arXiv:2004.00070"
    )
    scenarios = ("task-il",)
    Options = CCGNOptions
    backbones = ("mlp", "conv")
    backbone_note = "its channel gates wrap dense or conv layers"
    infers_task = True  # its task classifier, where the scenario hides the task

    def layers(self, ctx: TaskContext) -> list[str]:
        return ops.shared_layer_ids(PREFIX, len(ctx.specs))

    def path(self, ctx: TaskContext) -> list[str]:
        return channel_gates.path_ids(ctx.task_id, len(ctx.specs))

    # ---- the search ------------------------------------------------------------------------------------
    def defaults(self) -> Decisions:
        return {"sparsity": self.options.sparsity}

    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """With the search, the paper's lambda_s first."""
        plan = super().search_plan(ctx)
        return dataclasses.replace(plan, initial=(self.defaults(),)) if self.options.search else plan

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {"sparsity": trial.suggest_float("sparsity", *self.options.sparsity_range, log=True)}

    # ---- the candidate ---------------------------------------------------------------------------------
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        layers = self.layers(ctx)
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id, owners=False)
        unit_gates.gated_layers(graph, layers)
        options = self.options
        graph = channel_gates.add_gated_path(
            graph,
            ctx.task_id,
            layers,
            options.gate_hidden,
            options.temperature,
            options.gate_summary,
            options.gate_batch_norm,
        )
        graph = ops.add_head(graph, ctx.task_id, self.path(ctx)[-1], ctx.n_outputs)
        chosen = {**self.defaults(), **decisions}
        return Candidate(graph, decisions=chosen, training=self.training(graph, ctx, chosen))

    def training(self, graph: ModuleGraph, ctx: TaskContext, decisions: Decisions) -> Training:
        """The shared layers train except the channels earlier tasks froze; the gating modules train with
        the cross-entropy plus the sparsity objective."""
        layers = self.layers(ctx)
        frozen = channel_gates.frozen_units(graph, layers, ctx.task_id)
        train_masks = {
            node_id: {
                name: ~held for name, held in unit_gates.connection_masks(graph, node_id, units, None).items()
            }
            for node_id, units in frozen.items()
            if units.any()
        }
        objective = Sparsity(self.path(ctx), float(decisions["sparsity"]), self.options.sparsity_warmup)
        return Training(
            train_masks=train_masks or None,
            start=objective.start,
            before_step=objective.before_step,
            penalty=objective.penalty,
        )

    # ---- the task classifier (class-IL) ------------------------------------------------------------------
    def rehearsal(self) -> Rehearsal:
        """The episodic memory trains the task classifier, not the tasks' heads."""
        return Rehearsal(ExemplarMemory(self.options.memory_size, "random"), rehearsed=False)

    def last_nodes(self, ctx: TaskContext, tasks: int) -> list[str]:
        return [channel_gates.path_ids(task, len(ctx.specs))[-1] for task in range(tasks)]

    def infer_task(self, graph: ModuleGraph, t: int, x: torch.Tensor) -> torch.Tensor:
        if t == 0:
            return torch.zeros(len(x), dtype=torch.long)
        n_layers = len(self.specs_for(graph.input_shape))
        last = [channel_gates.path_ids(task, n_layers)[-1] for task in range(t + 1)]
        return infer_tasks(graph, graph.node(graph.head(t)).state, last, x)

    # ---- after the search ------------------------------------------------------------------------------
    def firing_split(self, ctx: TaskContext) -> Split:
        """The samples whose gates pick the task's channels: its validation samples (else its training)."""
        return ctx.task.val if len(ctx.task.val) else ctx.task.train

    def firing(self, graph: ModuleGraph, ctx: TaskContext) -> GateFiring:
        """The task's gates on its validation samples (its training samples where it has none)."""
        return gate_firing(graph, ctx.task_id, self.path(ctx), self.firing_split(ctx).x)

    def important(self, graph: ModuleGraph, ctx: TaskContext) -> dict[str, torch.Tensor]:
        """Per gate node of the task, the channels it fires for on more than `firing_threshold` of its
        validation samples."""
        firing = self.firing(graph, ctx)
        return {node_id: firing.rates(node_id) > self.options.firing_threshold for node_id in self.path(ctx)}

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """The task keeps its important channels (frozen from now on), its gating modules and head freeze,
        and the channels no task holds start again for the next task."""
        graph = channel_gates.keep_units(chosen, ctx.task_id, self.important(chosen, ctx))
        graph = ops.freeze(graph, [*self.path(ctx), graph.head(ctx.task_id)])
        if self.options.reinitialise_free:
            frozen = channel_gates.frozen_units(graph, self.layers(ctx), ctx.task_id + 1)
            graph = channel_gates.reinitialise_units(
                graph, {n: ~units for n, units in frozen.items()}, ctx.seed
            )
        if ctx.task_id > 0:  # the task classifier over every task so far (the paths are final now)
            own = ctx.task.train
            samples = Split(own.x, torch.full_like(own.y, ctx.task_id))
            if ctx.memory is not None:
                samples = Split(torch.cat([ctx.memory.x, own.x]), torch.cat([ctx.memory.y, samples.y]))
            weights, accuracy = train_task_classifier(
                graph,
                self.last_nodes(ctx, ctx.task_id + 1),
                samples,
                hidden=self.options.classifier_hidden,
                epochs=self.options.classifier_epochs,
                lr=self.options.classifier_lr,
                seed=derived_seed(ctx.seed, "task classifier"),
            )
            state = {**weights, "task_classifier_accuracy": torch.tensor(accuracy)}
            graph = node_data.with_state(graph, {graph.head(ctx.task_id): state})
        return graph

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float:
        """The share of the channels free before the task that it would freeze (0 when none was free)."""
        layers, important = self.layers(ctx), self.important(graph, ctx)
        frozen = channel_gates.frozen_units(graph, layers, ctx.task_id)
        newly = sum(
            int((important[g] & ~frozen[n]).sum()) for g, n in zip(self.path(ctx), layers, strict=True)
        )
        free = sum(int((~units).sum()) for units in frozen.values())
        return newly / free if free else 0.0

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per layer, from the committed graph's gates on the validation samples: the share of channels a
        sample opens on average, the share whose gate depends on the sample (open for some, closed for
        others), the distinct sets of open channels, the share of samples opening their class's most common
        set (1: a mask per class); the task's frozen (important) channels, those it froze first, and the
        channels frozen and free after it; and the share of the free channels the task froze."""
        firing, layers = self.firing(committed, ctx), self.layers(ctx)
        labels = self.firing_split(ctx).y
        before = channel_gates.frozen_units(committed, layers, ctx.task_id)
        after = channel_gates.frozen_units(committed, layers, ctx.task_id + 1)
        records = []
        for i, (gate_id, layer_id) in enumerate(zip(self.path(ctx), layers, strict=True)):
            kept = channel_gates.allowed_units(committed, gate_id)
            units = kept.numel()
            records.append(
                {
                    "layer": i,
                    "channels": units,
                    "open": firing.open_share(gate_id),
                    "input_dependent": firing.conditional_share(gate_id),
                    "patterns": firing.patterns(gate_id),
                    "class_mask": firing.class_mask_share(gate_id, labels),
                    "important": int(kept.sum()) / units,
                    "newly_frozen": int((kept & ~before[layer_id]).sum()) / units,
                    "frozen": int(after[layer_id].sum()) / units,
                    "free": int((~after[layer_id]).sum()) / units,
                }
            )
        newly = sum(int((after[n] & ~before[n]).sum()) for n in layers)
        free = sum(int((~before[n]).sum()) for n in layers)
        state = committed.node(committed.head(ctx.task_id)).state
        classifier = None
        if "task_classifier_accuracy" in state:  # from the second task on
            classifier = {
                "tasks": ctx.task_id + 1,
                "exemplars": 0 if ctx.memory is None else len(ctx.memory),
                "training_accuracy": float(state["task_classifier_accuracy"]),
            }
        return {
            "gates": records,
            "capacity_used": newly / free if free else 0.0,
            "task_classifier": classifier,
        }
