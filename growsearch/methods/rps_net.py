"""Adaptive RPS-Net: random path selection for class-incremental learning (Rajasegaran, Hayat, Khan, Khan &
Shao, NeurIPS 2019, "Random Path Selection for Incremental Learning"; the adaptive path switching from
arXiv:1906.01120v3). Mechanics as the authors' code (brjathu/RPSnet) has them; the papers' full
text was not at hand, only their abstracts.

The network: every layer has M parallel modules plus a skip connection; a path picks `modules_per_path`
modules per layer; a task's view sums, per layer, the outputs of every module trained so far and of its
path (`_rps_net_paths`), and one classifier over every class seen so far answers for every task
(grown each task, the old classes' rows copied).

The search is the paper's random path selection: when a task takes a new path, each trial samples one path
at random (`decide`, a seeded random sampler) and trains on the task's samples and the exemplar
memory's, and the best on validation is committed: the trial budget is the paper's N parallel paths.
A new path's modules that earlier tasks trained are reused frozen; the others are new and train.

Path switching: a task keeps the previous task's path, whose modules train again (the authors' code), until
that path is saturated. At each commit the path's saturation is measured (the share of its trainable
weights carrying Fisher information on the task's samples and exemplars); above `saturation_threshold` (th)
the path is frozen for good and the next task samples a new one. Frozen modules never change again.

The loss: cross-entropy plus phi(t) times the distillation from the previous task's model (a frozen compiled
copy of its view): the target is the previous model's logits on the old classes and the one-hot label on the
new ones, compared by KL divergence at temperature 2. phi's schedule (the authors' code): 1 up to task
J (`rigidness_from`), then `rigidness` (t - J), so the network grows more rigid as classes accumulate.
Exemplars: `memory_size` in all, class-balanced, chosen by herding on the last layer's features.

Departures: a 2x100 MLP of linear modules (the paper's ResNet-18 blocks on CIFAR-100); no data augmentation,
exemplars not repeated 10x (the authors' MNIST code), and the KL summed as it is (the code clamps each
term at 0); a trial is judged on the new task's validation samples (the stream keeps none of old classes);
a reused path trains one candidate (nothing is sampled); the saturation measure is ours (the adaptive paper's
capacity measure could not be read here): the share of the path's trainable weights whose Fisher
information reaches `fisher_floor` times its mean, on at most `fisher_samples` samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch.nn import functional as F

from growsearch.methods._rps_net_paths import (
    Path,
    add_path_view,
    is_module,
    original,
    path_saturation,
    pool_id,
)
from growsearch.methods.toolkit import (
    INPUT,
    Batch,
    Candidate,
    ConfigError,
    Conv2d,
    Decisions,
    ExemplarMemory,
    Linear,
    Method,
    ModuleGraph,
    NodeSpec,
    Rehearsal,
    Retrain,
    SearchPlan,
    SeededRandomSampler,
    TaskContext,
    Training,
    TrainingRun,
    compile_view,
    derived_seed,
    node_data,
    ops,
    require,
    run_in_batches,
    spend_macs,
    split_activation,
)

SATURATION = "saturation"  # kept in the state of the task's head: what the commit measured


@dataclass(frozen=True)
class RPSNetOptions:
    modules_per_layer: int = 8  # M
    modules_per_path: int = 1  # modules a path picks per layer (the authors' code: 1)
    skip: bool = True  # each layer's input is added to its modules' outputs where the shapes match
    saturation_threshold: float = 0.5  # th: a path saturated beyond it is frozen and a new one sampled
    fisher_floor: float = 0.1  # a weight carries information when its Fisher reaches this times the mean
    fisher_samples: int = 200
    temperature: float = 2.0
    rigidness: float = 2.5  # phi's slope (the authors' rigidness_coff)
    rigidness_from: int = 1  # J: phi is 1 up to task J, then rigidness * (t - J)
    memory_size: int = 200  # exemplars in all (the authors' 2000 for CIFAR-100, 4400 for MNIST)
    memory_strategy: str = "herding"

    def validate(self, where: str) -> None:
        for name in ("modules_per_layer", "modules_per_path", "fisher_samples", "memory_size"):
            require(getattr(self, name) >= 1, f"{where}.{name}", "expected an integer >= 1")
        require(
            self.modules_per_path <= self.modules_per_layer,
            f"{where}.modules_per_path",
            f"expected at most modules_per_layer ({self.modules_per_layer}), got {self.modules_per_path}",
        )
        require(0 <= self.saturation_threshold <= 1, f"{where}.saturation_threshold", "expected [0, 1]")
        require(self.fisher_floor > 0, f"{where}.fisher_floor", "expected a number > 0")
        require(self.temperature > 0, f"{where}.temperature", "expected a number > 0")
        require(self.rigidness >= 0, f"{where}.rigidness", "expected a number >= 0")
        require(self.rigidness_from >= 0, f"{where}.rigidness_from", "expected an integer >= 0")
        require(
            self.memory_strategy in ("herding", "random"),
            f"{where}.memory_strategy",
            "expected herding or random",
        )


def distillation_weight(task: int, rigidness: float, rigid_from: int) -> float:
    """phi(t): 1 up to task J, then rigidness * (t - J) (the authors' schedule)."""
    return 1.0 if task <= rigid_from else rigidness * (task - rigid_from)


def distillation_loss(
    logits: torch.Tensor, old_logits: torch.Tensor, y: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(softmax(target / T) || softmax(logits / T)), mean over the batch; the target is the previous
    model's logits on its classes and the one-hot label on the new ones."""
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    target[:, : old_logits.shape[1]] = old_logits
    return F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.softmax(target / temperature, dim=1),
        reduction="batchmean",
    )


def features_node(graph: ModuleGraph, task: int) -> str:
    """The last join of a task's view: what its classifier reads."""
    return graph.node(graph.head(task)).inputs[0]


class RPSNet(Method):
    name = "rps-net"
    paper = "Rajasegaran et al. 2019, Random Path Selection for Incremental Learning (Adaptive RPS-Net)"
    scenarios = ("class-il",)
    Options = RPSNetOptions
    backbones = ("mlp", "conv")
    backbone_note = "its paths sum modules' pre-activations, which residual blocks do not expose"
    single_head = True

    def specs_for(self, input_shape: tuple[int, ...]) -> tuple[NodeSpec, ...]:
        specs = super().specs_for(input_shape)
        wrong = [i for i, s in enumerate(specs) if not isinstance(s, Linear | Conv2d)]
        if wrong:
            raise ConfigError(
                f"{self.space.source}: network.layers[{wrong[0]}]: rps-net's modules are linear or conv "
                f"layers, got {specs[wrong[0]]}"
            )
        return specs

    # ---- the search ------------------------------------------------------------------------------------
    def switching(self, ctx: TaskContext) -> bool:
        """Whether the task samples a new path: the first task, or the previous path is saturated (frozen)."""
        modules = [n for n in ctx.committed.node_ids() if is_module(ctx.committed, n)]
        return ctx.task_id == 0 or all(ctx.committed.node(n).frozen for n in modules)

    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """N random paths when the task takes a new path (one seeded random sampler; candidates differ in
        their modules' ids, so no common template packs them), one candidate when it keeps the last."""
        budget = super().search_plan(ctx).budget if self.switching(ctx) else 1
        return SearchPlan(budget, sampler=SeededRandomSampler(seed=ctx.seed), pack_limit=1)

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.switching(ctx):
            return {}
        last = self.options.modules_per_layer - 1
        return {
            gene: trial.suggest_int(gene, 0, last)
            for layer in range(len(ctx.specs))
            for gene in _genes(layer, self.options.modules_per_path)
        }

    # ---- rehearsal -------------------------------------------------------------------------------------
    def rehearsal(self) -> Rehearsal:
        memory = ExemplarMemory(self.options.memory_size, self.options.memory_strategy)
        return Rehearsal(memory, features=self.exemplar_features)

    def exemplar_features(self, graph: ModuleGraph, ctx: TaskContext, x: torch.Tensor) -> torch.Tensor:
        output = features_node(graph, ctx.task_id)
        return run_in_batches(compile_view(graph, ctx.task_id, output=output).module.eval(), [x])[0]

    # ---- the candidate ---------------------------------------------------------------------------------
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        t, options, committed = ctx.task_id, self.options, ctx.committed
        switched = self.switching(ctx)
        if switched:
            genes = [_genes(layer, options.modules_per_path) for layer in range(len(ctx.specs))]
            path: Path = tuple(tuple(sorted({int(decisions[g]) for g in layer})) for layer in genes)
        else:
            path = tuple(tuple(layer) for layer in ctx.history[-1].decisions["path"])
        layers = [split_activation(spec) for spec in ctx.specs]
        graph, features = add_path_view(committed, t, layers, path, options.modules_per_layer, options.skip)
        seen = int(ctx.task.train.y.max()) + 1  # the classes so far (the memory holds the old ones)
        # the classifier starts as the previous one on the old classes
        graph = ops.add_class_head(graph, t, features, seen, t - 1 if t > 0 else None)
        on_path = [pool_id(layer, m) for layer, ms in enumerate(path) for m in ms]
        in_view = sorted({original(graph, n) for n in graph.view(t) if is_module(graph, n)})
        previous = committed.node(committed.head(t - 1)).state.get(SATURATION) if t > 0 else None
        mechanism = {
            "path": [list(ms) for ms in path],
            "new_modules": [n for n in on_path if n not in committed],
            "retrained_modules": [n for n in on_path if n in committed and not committed.node(n).frozen],
            "reused_frozen_modules": [n for n in in_view if n in committed and committed.node(n).frozen],
            "switched": switched,
            "previous_saturation": None if previous is None else float(previous),
            "distillation_weight": self._distillation_weight(t),
            "classes_seen": seen,
        }
        decided = {"path": [list(ms) for ms in path], "switched": switched}
        return Candidate(graph, decided, mechanism, self.training(graph, ctx))

    def _distillation_weight(self, task: int) -> float:
        if task == 0:
            return 0.0
        return distillation_weight(task, self.options.rigidness, self.options.rigidness_from)

    def training(self, graph: ModuleGraph, ctx: TaskContext) -> Training | None:
        """Distillation from the previous task's model (none for the first task). Frozen nodes run per
        batch (`changing`), so the batch holds the raw inputs the previous model reads."""
        t = ctx.task_id
        if t == 0:
            return None
        frozen = tuple(n for n in graph.view(t) if n != INPUT and graph.node(n).frozen)
        distillation = _Distillation(
            ctx.committed, t - 1, self._distillation_weight(t), self.options.temperature
        )
        return Training(changing=frozen, start=distillation.start, batch_penalty=distillation.loss)

    # ---- the commit ------------------------------------------------------------------------------------
    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """Measure the path's saturation; freeze the classifier, and the path too once it is saturated."""
        t, view = ctx.task_id, chosen.view(ctx.task_id)
        path = [n for n in view if is_module(chosen, n) and not chosen.node(n).frozen]
        saturation = path_saturation(
            chosen,
            t,
            path,
            ctx.task.train,
            floor=self.options.fisher_floor,
            samples=self.options.fisher_samples,
            seed=derived_seed(ctx.seed, "saturation"),
        )
        keep_training = set() if saturation > self.options.saturation_threshold else set(path)
        graph = ops.freeze(chosen, [n for n in view if n != INPUT and n not in keep_training])
        kept = {graph.head(t): {SATURATION: torch.tensor(saturation, dtype=torch.float64)}}
        return node_data.with_state(graph, kept)

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        t = ctx.task_id
        modules = [n for n in committed.view(t) if is_module(committed, n)]
        return {
            "saturation": float(committed.node(committed.head(t)).state[SATURATION]),
            "saturation_threshold": self.options.saturation_threshold,
            "path_frozen": all(committed.node(n).frozen for n in modules),
            "exemplars": ctx.exemplars,
        }


def _genes(layer: int, width: int) -> list[str]:
    return [f"L{layer}/module{k}" for k in range(width)]


class _Distillation:
    """phi(t) times the distillation from the previous task's model (compiled, frozen) on each batch."""

    def __init__(self, committed: ModuleGraph, previous: int, weight: float, temperature: float):
        self.committed, self.previous, self.weight, self.temperature = (
            committed,
            previous,
            weight,
            temperature,
        )
        self.model: torch.nn.Module | None = None
        self.macs = committed.macs(committed.view(previous))  # the previous model's pass, per sample

    def start(self, run: TrainingRun) -> None:
        self.model = compile_view(self.committed, self.previous).module.to(run.batches.y.device).eval()

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            old_logits = self.model(batch.inputs[0])
        spend_macs(self.macs * len(batch.y))  # the teacher's pass counts in the training's compute
        return self.weight * distillation_loss(logits, old_logits, batch.y, self.temperature)
