"""Side-Tuning: a baseline for network adaptation via additive side networks (Zhang, Sax, Zamir, Guibas &
Malik, ECCV 2020, arXiv:1912.13503).

A frozen base network B and, per task, a small side network S_t whose features are blended with the base's,
`alpha_t B(x) + (1 - alpha_t) S_t(x)`, then the task's own head (the paper's transfer layer T_t). No
pretrained network can be downloaded here, so the first task trains the base (the backbone's layers and a
head), which is then frozen for ever. Every later task adds its side network (the backbone's layers narrowed
to `side_width` of the base's widths, the last one as wide as the base's so the two features add up, reading
the input), a `Blend` node over the base's last layer and the side's, and a head. A task's view is the frozen
base plus its own nodes, frozen after it: old tasks' outputs are bit-identical after later tasks, and the
order of tasks does not matter. Task-IL (class-IL through growsearch's task inference).

alpha (`options.alpha`), stored as the blend node's weight so a frozen task keeps its own:
- `learned` (the default; the authors' lifelong code, `merge_operators.Alpha`): alpha = sigmoid(a), a
  scalar trained with the side network by the same optimiser, without weight decay, from a = 0 (alpha 0.5,
  `alpha_init`). Here alpha = sigmoid(k a) with k = `alpha_logit_scale`: under Adam each step moves the
  logit k times as far, alpha's learning rate k times the network's (the authors: k = 1);
- `curriculum` (the paper's curriculum on alpha): alpha is set before every step, annealed from
  `alpha_start` = 1 (the base alone) to `alpha_end` = 0 (the side alone: the paper's argument for
  asymptotic consistency) over the task's training steps, linearly (the paper fixes the ends, not the shape).

The side network starts `distilled` (the paper's: its side networks are distilled from the base): before the
task trains, the side is trained to reproduce the base's features (mean squared error, `distill_epochs`);
or `random`. The search: each later task decides the side's width (`side_width_range`) and, for a learned
alpha, alpha's start (`alpha_init_range`); the defaults (the authors' alpha start and distilled side, at a
quarter of the base's widths) are enqueued first, so a one-trial run is the paper's configuration.

Each later task's record shows alpha at the start and the end of training, and the accuracy (validation and
test) of its committed head reading the base alone (alpha forced to 1), the side alone (alpha 0) and the
blend, measured on a compiled copy of the committed graph (`alone_and_blended`).

Departures: the shipped YAML steps alpha 10 times as fast as the network (`alpha_logit_scale: 10`; the
option's default, 1, is the authors'): Adam moves a scalar by about its learning rate a step, and a task
here trains about 150 steps (the authors' iCIFAR task: 4 epochs of 5,000 images at batch 128, about 157), so
at 1e-3 the authors' logit moves at most about 0.15 and alpha stays within 0.04 of 0.5 (measured: 0.467 to
0.492 on split-digits), the blend a constant in effect. The side network is the backbone narrowed (the
paper: a 4-layer FCN beside a ResNet-44 on iCIFAR; a quarter of the base's widths is growsearch's choice); it
is distilled on the new task's training inputs (the authors distil on the base's pretraining data, which a
continual learner no longer holds); no GroupNorm before the head; the YAML's weight decay applies to alpha
too (the authors exempt it; the shipped YAML has none).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import optuna
import torch

from growsearch.methods._side_tuning_blend import (
    Blend,
    add_side_network,
    alone_and_blended,
    blend_id,
    side_id,
)
from growsearch.methods._side_tuning_distillation import distil_features
from growsearch.methods.toolkit import (
    INPUT,
    Candidate,
    Decisions,
    Method,
    ModuleGraph,
    NodeSpec,
    SearchPlan,
    TaskContext,
    Training,
    TrainingRun,
    layer_specs,
    ops,
    require,
    resolve_device,
)

BASE_TASK = 0
LEARNED, CURRICULUM = "learned", "curriculum"


@dataclass(frozen=True)
class SideTuningOptions:
    alpha: Literal["learned", "curriculum"] = LEARNED
    alpha_init: float = 0.5  # learned: sigmoid(0), the authors' start
    # learned: alpha = sigmoid(alpha_logit_scale * a), so Adam steps alpha's logit that many times as far
    alpha_logit_scale: float = 1.0  # the authors' (the shipped YAML: 10)
    alpha_start: float = 1.0  # curriculum: the base alone at the first step
    alpha_end: float = 0.0  # curriculum: the side alone at the last
    side_width: float = 0.25  # the side's hidden widths, a fraction of the base's
    side_init: Literal["distilled", "random"] = "distilled"
    distill_epochs: int = 5
    side_width_range: tuple[float, float] = (0.1, 0.5)
    alpha_init_range: tuple[float, float] = (0.1, 0.9)

    def validate(self, where: str) -> None:
        for name in ("alpha_start", "alpha_end"):
            require(0 <= getattr(self, name) <= 1, f"{where}.{name}", "expected a number in [0, 1]")
        require(self.distill_epochs >= 1, f"{where}.distill_epochs", "expected an integer >= 1")
        require(self.alpha_logit_scale > 0, f"{where}.alpha_logit_scale", "expected a number > 0")
        low, high = self.side_width_range
        require(
            0 < low <= self.side_width <= high <= 1,
            f"{where}.side_width_range",
            f"expected [low, high] with 0 < low <= side_width ({self.side_width}) <= high <= 1",
        )
        low, high = self.alpha_init_range
        require(
            0 < low <= self.alpha_init <= high < 1,
            f"{where}.alpha_init_range",
            f"expected [low, high] with 0 < low <= alpha_init ({self.alpha_init}) <= high < 1",
        )


def curriculum_alpha(step: int, total_steps: int, start: float, end: float) -> float:
    """alpha at training step `step` (1-based) of `total_steps`: `start` at the first, `end` at the last."""
    fraction = (step - 1) / (total_steps - 1) if total_steps > 1 else 1.0
    return end if fraction >= 1 else start + (end - start) * fraction


class Curriculum:
    """Sets the blend's alpha before every training step (`curriculum_alpha`), once training starts: the
    compiled blend node and the number of steps are known then."""

    def __init__(self, blend_node: str, alpha_start: float, alpha_end: float):
        self.blend_node, self.alpha_start, self.alpha_end = blend_node, alpha_start, alpha_end
        self.total_steps = 0
        self.blend: torch.nn.Module | None = None

    def start(self, run: TrainingRun) -> None:
        self.blend = run.program.full.node_modules[self.blend_node]
        self.total_steps = run.total_steps

    def before_step(self, step: int) -> None:
        alpha = curriculum_alpha(step, self.total_steps, self.alpha_start, self.alpha_end)
        self.blend.alpha.fill_(alpha)


class SideTuning(Method):
    name = "side-tuning"
    paper = (
        "Zhang, Sax, Zamir, Guibas & Malik 2020, Side-Tuning: A Baseline for Network Adaptation via "
        "Additive Side Networks (ECCV), arXiv:1912.13503"
    )
    scenarios = ("task-il",)
    Options = SideTuningOptions

    # ---- the search ------------------------------------------------------------------------------------
    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """The base task trains once; a later task searches, the defaults first."""
        if ctx.task_id == BASE_TASK:
            return SearchPlan(budget=1)
        return SearchPlan(budget=self.space.search.n_trials or 1, initial=(self.defaults(),))

    def defaults(self) -> Decisions:
        """The default configuration (the paper's, at growsearch's side width): every later task's first
        trial."""
        learned = self.options.alpha == LEARNED
        return {
            "side_width": self.options.side_width,
            **({"alpha_init": self.options.alpha_init} if learned else {}),
        }

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if ctx.task_id == BASE_TASK:
            return {}
        decisions: Decisions = {
            "side_width": trial.suggest_float("side_width", *self.options.side_width_range)
        }
        if self.options.alpha == LEARNED:
            decisions["alpha_init"] = trial.suggest_float("alpha_init", *self.options.alpha_init_range)
        return decisions

    # ---- the candidate ---------------------------------------------------------------------------------
    def side_specs(self, side_width: float, ctx: TaskContext) -> list[NodeSpec]:
        """The backbone's layers at `side_width` of their widths (at least one unit), the last one with units
        as wide as the base's (the blend adds the two; a global pool after it has no width)."""
        layers = self.space.layers
        last = max(i for i, layer in enumerate(layers) if layer.width > 0)
        widths = [
            layer.width if i >= last else max(1, round(side_width * layer.width))
            for i, layer in enumerate(layers)
        ]
        return layer_specs(layers, ctx.committed.input_shape, widths)

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        if ctx.task_id == BASE_TASK:
            graph = ops.reuse_prefix(ctx.committed, BASE_TASK, None, 0, ctx.specs, ctx.n_outputs)
            return Candidate(graph, {"role": "base"}, {"role": "base"})
        chosen = {**self.defaults(), **decisions}
        learned = self.options.alpha == LEARNED
        blend = Blend(learned, self.options.alpha_logit_scale if learned else 1.0)
        start = chosen["alpha_init"] if blend.learned else self.options.alpha_start
        specs = self.side_specs(float(chosen["side_width"]), ctx)
        base_output = _base_output(ctx.committed)
        graph = add_side_network(
            ctx.committed, ctx.task_id, base_output, specs, ctx.n_outputs, blend, blend.start(start)
        )
        widths = [_width(spec) for spec in specs if _width(spec)]  # a global pool has no width
        mechanism: dict[str, Any] = {"side_widths": widths, "alpha_start": start}
        if self.options.side_init == "distilled":
            distillation = distil_features(
                graph,
                (BASE_TASK, base_output),
                (ctx.task_id, side_id(ctx.task_id, len(specs) - 1)),
                ctx.task.train.x,
                self.space.training,
                epochs=self.options.distill_epochs,
                seed=int(torch.randint(2**31 - 1, ())),  # the trial's seeded stream
            )
            mechanism["distillation"] = dataclasses.asdict(distillation)
        training = self.curriculum(ctx) if not blend.learned else None
        return Candidate(graph, {**chosen, "base_task": BASE_TASK}, mechanism, training)

    def curriculum(self, ctx: TaskContext) -> Training:
        """alpha set before every step, from `alpha_start` at the first to `alpha_end` at the last (a learned
        alpha trains as any weight)."""
        curriculum = Curriculum(blend_id(ctx.task_id), self.options.alpha_start, self.options.alpha_end)
        return Training(start=curriculum.start, before_step=curriculum.before_step)

    # ---- what the task's record shows --------------------------------------------------------------------
    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """The base's parameters; for a later task, alpha at the end of training (`alpha_start`, the start,
        comes with the candidate's mechanism), the accuracy of the base alone, the side alone and the blend,
        and the side network's parameters against the base's."""
        head = committed.head(BASE_TASK)
        base = committed.n_parameters(n for n in committed.upstream(_base_output(committed)) if n != INPUT)
        if ctx.task_id == BASE_TASK:
            return {
                "role": "base",
                "base_parameters": base,
                "head_parameters": committed.node(head).n_parameters,
            }
        t = ctx.task_id
        blend = committed.node(blend_id(t))
        # the side network: what the blend's second input computes from the data
        side = committed.n_parameters(n for n in committed.upstream(blend.inputs[1]) if n != INPUT)
        splits = {"val": ctx.task.val, "test": ctx.task.test}
        device = resolve_device(self.space.training.device)
        return {
            "role": "side",
            "alpha_end": blend.spec.alpha(blend.weights),
            "alpha_mode": self.options.alpha,
            "accuracy": alone_and_blended(committed, t, splits, device),
            "side_parameters": side,
            "base_parameters": base,
            "side_fraction_of_base": side / base,
            "head_parameters": committed.node(committed.head(t)).n_parameters,
        }


def _base_output(graph: ModuleGraph) -> str:
    """The base network's last layer: what the base task's head reads."""
    return graph.node(graph.head(BASE_TASK)).inputs[0]


def _width(spec: NodeSpec) -> int:
    return int(getattr(spec, "out_features", None) or getattr(spec, "out_channels", 0))
