"""DER: dynamically expandable representation for class-incremental learning (Yan, Xie & He, CVPR 2021).

Each task adds a feature extractor F_t (the backbone's layers, reading the input); the extractors of
earlier tasks are frozen. The super-feature is every extractor's output side by side, [F_0(x), ..., F_t(x)],
and one classifier H_t over it answers for every class seen so far (class-IL: the newest head scores every
task). H_t starts from H_{t-1}'s weights for the old classes and old features. The task trains on its own
samples and the exemplar memory's (`memory_size` samples, class-balanced, herding on the super-feature), with

    L = CE(H_t) + lambda_a CE(H_t^a) + lambda_s L_S                                   (eq. 9)

- H_t^a, the auxiliary classifier (eq. 6): on F_t's features alone, the task's new classes plus one class
  for every old one, so F_t learns what tells the new classes apart; dropped after training.
- L_S, the sparsity of F_t's channel masks (eqs. 7-8): every layer's units (conv: channels) are multiplied
  by m_l = sigmoid(s e_l), s annealed within every epoch as HAT's (`algorithms.hard_attention`), and
  L_S = sum_l K_l |m_{l-1}|_1 |m_l|_1 / sum_l K_l c_{l-1} c_l is the share of F_t's weights in use.
  After training, the units whose mask is off (e <= 0) are removed from F_t (`grow.unit_removal`): the
  committed extractor is smaller, and computes what the masked one did.

Then the classifier learning stage (sec. 3.3): H_t alone is retrained for `balance_epochs` on a
class-balanced subset of the task's samples and the memory's (as many of each class as the rarest has),
against the bias towards new classes. The search: each task's prune strength lambda_s (`options.search`),
the paper's value first.

The record shows, per task, F_t's units before and after pruning and how many of the kept last-layer units
fire (are positive) on the task's own samples: an extractor whose units died in training is frozen dead,
and its classes lose the features meant for them.

Departures: no data augmentation. H_t starts from H_{t-1}, and the balanced stage retrains it as it is with
no temperature (the authors' code starts each H_t fresh, and the stage from a fresh one at temperature 5:
on split-mnist5k class-IL at rate 0.02, seeds 0-2, 0.876 against 0.865 here, within the seeds' spread).
The first task's extractor is masked and pruned like the later ones (no auxiliary classifier: it has no old
classes). A trial is judged on the new task's validation samples (the stream keeps none of old classes).
The shipped MLP trains at rate 0.05, not the paper's 0.1 (momentum 0.9 both): the paper's extractors are
batch-normalised ResNet-18s, whose normalisation absorbs the masks' changing scale and keeps features
bounded. This MLP has none: at 0.1 its steps are large (batch losses near 20 as a task starts: the
inherited head is confident on old classes and frozen features are unbounded; HAT's compensated mask
gradients add up under momentum) and they kill the new extractor's ReLUs. On split-mnist5k class-IL
(shipped YAML, seeds 0-4), at 0.1: A_T 0.665 (0.556-0.789) with 200 exemplars and 0.732 (0.639-0.811)
with 500, and three runs of five commit an extractor with 0 or 1 unit firing; at 0.05: 0.861
(0.839-0.877) and 0.900 (0.887-0.909), every extractor with most of its kept units firing. Replay with the
same memory and optimiser: 0.804 and 0.871.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn
from torch.nn import functional as F

from growsearch.methods.algorithms.hard_attention import Annealing, UnitAttention
from growsearch.methods.toolkit import (
    INPUT,
    Activation,
    Batch,
    Candidate,
    Conv2d,
    Decisions,
    ExemplarMemory,
    Method,
    ModuleGraph,
    Rehearsal,
    Retrain,
    SearchPlan,
    StepOutcome,
    TaskContext,
    Training,
    TrainingProgram,
    TrainingRun,
    class_balanced,
    compile_view,
    count_parameters,
    derived_seed,
    layer_node,
    node_data,
    ops,
    remove_units,
    require,
    run_in_batches,
    spend_macs,
    task_node,
    unit_gates,
)

EMBEDDING_CLAMP, COSH_CLAMP = 6.0, 50.0  # HAT's guards, for the same masks


@dataclass(frozen=True)
class DEROptions:
    memory_size: int = 200  # exemplars in all (the paper's 2000 for CIFAR-100's 50,000 images)
    memory_strategy: str = "herding"
    aux_weight: float = 1.0  # lambda_a
    sparsity: float = 1.0  # lambda_s, the prune strength
    s_max: float = 400.0  # the masks' sharpness at the end of each epoch (HAT's)
    balance_epochs: int = 5  # the classifier learning stage (0: none)
    search: bool = False  # true: each task searches lambda_s in sparsity_range (the default first)
    sparsity_range: tuple[float, float] = (0.01, 10.0)

    def validate(self, where: str) -> None:
        require(self.memory_size >= 1, f"{where}.memory_size", "expected an integer >= 1")
        require(
            self.memory_strategy in ("herding", "random"),
            f"{where}.memory_strategy",
            "expected herding or random",
        )
        require(self.aux_weight >= 0, f"{where}.aux_weight", "expected a number >= 0")
        require(self.sparsity >= 0, f"{where}.sparsity", "expected a number >= 0")
        require(self.s_max >= 1, f"{where}.s_max", "expected a number >= 1")
        require(self.balance_epochs >= 0, f"{where}.balance_epochs", "expected an integer >= 0")
        low, high = self.sparsity_range
        require(0 < low <= high, f"{where}.sparsity_range", "expected [low, high] with 0 < low <= high")


def extractor(ctx: TaskContext, task: int | None = None) -> list[str]:
    """The layer nodes of a task's feature extractor (the current task's by default)."""
    t = ctx.task_id if task is None else task
    return [layer_node(t, i) for i in range(len(ctx.specs))]


def features_node(task: int) -> str:
    return task_node(task, "features")


class DER(Method):
    name = "der"
    paper = "Yan, Xie & He 2021, DER: Dynamically Expandable Representation for Class Incremental Learning"
    scenarios = ("class-il",)
    Options = DEROptions
    backbones = ("mlp", "conv")
    backbone_note = "its pruning removes units of dense or conv layers"
    single_head = True

    # ---- the search ------------------------------------------------------------------------------------
    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        plan = super().search_plan(ctx)
        if not self.options.search:
            return plan
        return dataclasses.replace(plan, initial=({"sparsity": self.options.sparsity},))

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {"sparsity": trial.suggest_float("sparsity", *self.options.sparsity_range, log=True)}

    # ---- rehearsal -------------------------------------------------------------------------------------
    def rehearsal(self) -> Rehearsal:
        memory = ExemplarMemory(self.options.memory_size, self.options.memory_strategy)
        return Rehearsal(memory, features=self.exemplar_features)

    def exemplar_features(self, graph: ModuleGraph, ctx: TaskContext, x: torch.Tensor) -> torch.Tensor:
        """The super-feature [F_0(x), ..., F_t(x)], which herding picks exemplars by."""
        module = compile_view(graph, ctx.task_id, output=features_node(ctx.task_id)).module.eval()
        return run_in_batches(module, [x])[0]

    # ---- the candidate ---------------------------------------------------------------------------------
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        t, graph = ctx.task_id, ctx.committed.copy()
        previous = INPUT
        for i, spec in enumerate(ctx.specs):  # F_t, freshly initialised
            graph.add(layer_node(t, i), spec, [previous], t, layer=i)
            previous = layer_node(t, i)
        extractors = [extractor(ctx, k)[-1] for k in range(t + 1)]
        graph.add(features_node(t), Activation(None), extractors, t, merge="concat" if t > 0 else None)
        seen = int(ctx.task.train.y.max()) + 1  # the classes so far (the memory holds the old ones)
        # H_t starts as H_{t-1} on the old classes and the old features
        graph = ops.add_class_head(graph, t, features_node(t), seen, t - 1 if t > 0 else None)
        sparsity = float(decisions.get("sparsity", self.options.sparsity))
        training = _ExtractorTraining(graph, ctx, self.options, sparsity).training()
        return Candidate(graph, {"sparsity": sparsity}, {"classes_seen": seen}, training)

    # ---- the commit ------------------------------------------------------------------------------------
    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """Prune F_t to its masked units, retrain H_t on class-balanced data, freeze the task's nodes."""
        t, layers = ctx.task_id, extractor(ctx)
        kept = {node_id: chosen.node(node_id).gates[t] > 0.5 for node_id in layers}
        graph = node_data.without_gates(chosen, t, layers)
        for node_id, keep in kept.items():
            if not keep.any():  # a mask that closed everything still leaves the layer one unit
                keep[0] = True
            graph = remove_units(graph, node_id, keep)
        head = graph.head(t)
        if t > 0 and self.options.balance_epochs > 0:
            balanced = class_balanced(ctx.task.train, derived_seed(ctx.seed, "balanced"))
            features_frozen = ops.freeze(graph, [n for n, node in graph.nodes() if n != head])
            graph = retrain(features_frozen, self.options.balance_epochs, train=balanced)
        return ops.freeze(graph, [n for n, node in graph.nodes() if node.owner == t])

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """F_t's units per layer before and after pruning, how many of its output units fire on the task's
        own samples (0: a dead extractor), and its parameters."""
        layers = extractor(ctx)
        kept = [unit_gates.n_units(committed, n) for n in layers]
        own = ctx.task.train.x[: len(ctx.task.train) - ctx.exemplars]
        return {
            "units": [_width(spec) for spec in ctx.specs],
            "units_kept": kept,
            "units_firing": _units_firing(committed, ctx.task_id, layers[-1], own),
            "extractor_parameters": committed.n_parameters(layers),
            "unpruned_parameters": count_parameters(ctx.specs),
            "exemplars": ctx.exemplars,
        }


def _width(spec: Any) -> int:
    return spec.out_channels if isinstance(spec, Conv2d) else spec.out_features


def _units_firing(graph: ModuleGraph, task: int, node_id: str, x: torch.Tensor) -> int:
    """How many of `node_id`'s units (conv: channels) are positive for at least one sample of `x`."""
    module = compile_view(graph, task, output=node_id).module.eval()
    positive = run_in_batches(module, [x])[0] > 0
    per_unit = positive.flatten(2).any(-1) if positive.dim() > 2 else positive  # (samples, units)
    return int(per_unit.any(0).sum())


class _ExtractorTraining:
    """How F_t trains (eq. 9): its channel masks annealed and clamped as HAT's, their sparsity L_S, and
    after the first task the auxiliary classifier's loss; the masks are kept as the task's gates."""

    def __init__(self, graph: ModuleGraph, ctx: TaskContext, options: DEROptions, sparsity: float):
        self.task, layers = ctx.task_id, extractor(ctx)
        self.annealing = Annealing(options.s_max, 1)
        self.masks = {
            n: UnitAttention(unit_gates.n_units(graph, n), self.annealing, COSH_CLAMP) for n in layers
        }
        self.sparsity = _sparsity_loss(graph, layers, self.masks, sparsity)
        self.auxiliary = _AuxiliaryClassifier(graph, ctx, self.masks[layers[-1]], options.aux_weight)

    def training(self) -> Training:
        auxiliary = self.auxiliary if self.task > 0 else None  # the first task has no old classes
        return Training(
            gates=self.masks,
            start=self.start,
            before_step=self.annealing.before_step,
            penalty=self.sparsity,
            batch_penalty=auxiliary.loss if auxiliary else None,
            parameters=tuple(auxiliary.head.parameters()) if auxiliary else (),
            after_step=self.clamp,
            finish=self.finish,
        )

    def start(self, run: TrainingRun) -> None:
        self.annealing.batches = run.steps_per_epoch
        if self.task > 0:
            self.auxiliary.start(run.batches.y.device)

    def clamp(self, outcome: StepOutcome) -> None:
        for mask in self.masks.values():
            mask.embedding.clamp_(-EMBEDDING_CLAMP, EMBEDDING_CLAMP)

    def finish(self, trained: ModuleGraph, program: TrainingProgram) -> ModuleGraph:
        """The masks as the task's gates: the view computes with them until the commit prunes."""
        self.auxiliary.stop()
        return node_data.with_gates(trained, self.task, {n: m.binary() for n, m in self.masks.items()})


def _sparsity_loss(graph: ModuleGraph, layers: list[str], masks: dict[str, UnitAttention], weight: float):
    """lambda_s L_S (eq. 8): the share of F_t's weights between units whose masks are on."""
    input_channels = float(graph.shapes([INPUT])[INPUT][0])
    kernels = []
    for node_id in layers:
        spec = graph.node(node_id).spec
        kernels.append(spec.kernel_size**2 if isinstance(spec, Conv2d) else 1)

    def penalty() -> torch.Tensor:
        used, total = 0.0, 0.0
        previous, previous_count = None, input_channels
        for node_id, kernel in zip(layers, kernels, strict=True):
            mask = masks[node_id].soft()
            reading = previous.sum() if previous is not None else previous_count
            used = used + kernel * reading * mask.sum()
            total += kernel * previous_count * mask.numel()
            previous, previous_count = mask, float(mask.numel())
        return weight * used / total

    return penalty


class _AuxiliaryClassifier:
    """H_t^a (eq. 6): F_t's masked features -> the task's new classes, plus one class for all old ones. While
    it trains, the last mask's output (F_t's masked features) is kept from each forward pass."""

    def __init__(self, graph: ModuleGraph, ctx: TaskContext, last_mask: nn.Module, weight: float):
        own = ctx.task.train.y[: len(ctx.task.train) - ctx.exemplars]
        new_classes = torch.unique(own)
        seen = int(ctx.task.train.y.max()) + 1
        self.labels = torch.zeros(seen, dtype=torch.long)  # old classes -> 0
        self.labels[new_classes] = torch.arange(1, len(new_classes) + 1)
        features = math.prod(graph.shapes([extractor(ctx)[-1]])[extractor(ctx)[-1]])
        self.head = nn.Linear(features, len(new_classes) + 1)
        self.last_mask, self.weight = last_mask, weight
        self.features: torch.Tensor | None = None
        self.handle: torch.utils.hooks.RemovableHandle | None = None

    def start(self, device: torch.device) -> None:
        self.head.to(device)
        self.labels = self.labels.to(device)
        self.handle = self.last_mask.register_forward_hook(self.keep)

    def keep(self, _module: nn.Module, _args: Any, output: torch.Tensor) -> None:
        self.features = output

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        spend_macs(3 * self.head.in_features * self.head.out_features * len(batch.y))  # its head's passes
        return self.weight * F.cross_entropy(self.head(self.features.flatten(1)), self.labels[batch.y])

    def stop(self) -> None:
        """After training: the hook goes, and the last batch's features with it."""
        if self.handle is not None:
            self.handle.remove()
        self.handle, self.features = None, None
