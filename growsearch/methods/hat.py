"""HAT: overcoming catastrophic forgetting with hard attention to the task (Serra, Suris, Miron &
Karatzoglou, ICML 2018).

One network shared by every task, and per task a head and an attention gate on every hidden unit (conv:
channel): a_l^t = sigmoid(s e_l^t), with an embedding e_l^t learnt with the task. While a task trains, s
is annealed within every epoch from 1/s_max at the first batch to s_max at the last (eq. 4), and the
embedding's gradient is compensated for the annealing (eq. 5: times s_max/s (cosh(s e) + 1)/(cosh(e) + 1),
cosh's argument clamped to +-50 as in the authors' code) and the embedding clamped to +-6 after each step.
An attention regulariser (eq. 6) keeps capacity free: c sum a^t (1 - a^{<t}) / sum (1 - a^{<t}) over every
gated unit. After the task its gates are stored binary (the unit is open where e > 0, what sigmoid(s_max e)
rounds to); the weight (i, j) of a layer trains only unless both unit i and the unit j it reads (the data,
for the first layer) are open for an earlier task (eq. 3 with binary cumulative attention: the gradient
factor 1 - min(a_i, a_j) is 0 or 1), and such weights are held exactly whatever the optimiser does. An
old task's units therefore see exactly the weights they saw: its outputs are bit-identical after later
tasks. Heads are per task and ungated. Task-IL only.

Departures, each for a reason: the cumulative attention is binary (the paper keeps sigmoid(400 e), which
is 0 or 1 to float precision for all but |e| < 0.02), so protection is exact; the authors' validation-
driven learning-rate schedule and early stopping, and dropout, are not modelled (training.epochs is fixed,
the specs have no dropout). With `search: true` each task searches s_max and c (the authors' grids span
25..800 and 0.1..4) with Optuna, single- or multi-objective against `capacity_used`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import torch

from growsearch.methods.algorithms.hard_attention import Annealing, UnitAttention
from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    Method,
    ModuleGraph,
    Retrain,
    StepOutcome,
    TaskContext,
    Training,
    TrainingProgram,
    TrainingRun,
    node_data,
    ops,
    require,
    unit_gates,
)

PREFIX = "shared"


@dataclass(frozen=True)
class HATOptions:
    s_max: float = 400.0  # the authors' code and paper
    c: float = 0.75  # the regulariser's weight (`lamb`)
    embedding_clamp: float = 6.0  # |e| <= 6 after every step (`thres_emb`)
    cosh_clamp: float = 50.0  # overflow guard of the compensation (`thres_cosh`)
    search: bool = False  # true: each task searches s_max and c
    s_max_range: tuple[float, float] = (25.0, 800.0)
    c_range: tuple[float, float] = (0.1, 4.0)

    def validate(self, where: str) -> None:
        require(self.s_max >= 1, f"{where}.s_max", "expected a number >= 1")
        require(self.c >= 0, f"{where}.c", "expected a number >= 0")
        require(self.embedding_clamp > 0, f"{where}.embedding_clamp", "expected a number > 0")
        require(self.cosh_clamp > 0, f"{where}.cosh_clamp", "expected a number > 0")
        for name in ("s_max_range", "c_range"):
            low, high = getattr(self, name)
            require(0 < low <= high, f"{where}.{name}", "expected [low, high] with 0 < low <= high")


class HAT(Method):
    name = "hat"
    paper = (
        "Serra, Suris, Miron & Karatzoglou 2018, Overcoming Catastrophic Forgetting with Hard Attention to "
        "the Task"
    )
    scenarios = ("task-il",)
    Options = HATOptions
    backbones = ("mlp", "conv")
    backbone_note = "its unit gates hold weights between dense or conv units"

    def layers(self, ctx: TaskContext) -> list[str]:
        return ops.shared_layer_ids(PREFIX, len(ctx.specs))

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {
            "s_max": trial.suggest_float("s_max", *self.options.s_max_range, log=True),
            "c": trial.suggest_float("c", *self.options.c_range, log=True),
        }

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id, owners=False)
        unit_gates.gated_layers(graph, self.layers(ctx))
        graph = ops.add_head(graph, ctx.task_id, self.layers(ctx)[-1], ctx.n_outputs)
        settings = {"s_max": self.options.s_max, "c": self.options.c, **decisions}
        return Candidate(graph, decisions=settings, training=self.training(graph, ctx, settings))

    def training(self, graph: ModuleGraph, ctx: TaskContext, settings: Decisions) -> Training:
        """The task's attention learnt with its weights (annealed, compensated, regularised, clamped); the
        weights earlier tasks' open units use held."""
        layers = self.layers(ctx)
        s_max, c = float(settings["s_max"]), float(settings["c"])
        annealing = Annealing(s_max, 1)
        attention = {
            n: UnitAttention(unit_gates.n_units(graph, n), annealing, self.options.cosh_clamp) for n in layers
        }
        before = {n: unit_gates.used_before(graph, n, ctx.task_id) for n in layers}
        train_masks = {}
        for i, node_id in enumerate(layers):
            reads = before[layers[i - 1]] if i > 0 else None
            held = unit_gates.connection_masks(graph, node_id, before[node_id], reads)
            train_masks[node_id] = {name: ~mask for name, mask in held.items()}
        free = [(~before[n]).float() for n in layers]
        n_free = float(sum(f.sum() for f in free))

        def penalty() -> torch.Tensor:
            if n_free == 0:  # every unit is used already: nothing left to keep free
                return torch.zeros(())
            used = sum(
                (attention[n].soft() * f.to(attention[n].embedding.device)).sum()
                for n, f in zip(layers, free, strict=True)
            )
            return c * used / n_free

        def clamp(outcome: StepOutcome) -> None:
            for gate in attention.values():
                gate.embedding.clamp_(-self.options.embedding_clamp, self.options.embedding_clamp)

        def start(run: TrainingRun) -> None:
            annealing.batches = run.steps_per_epoch

        def finish(trained: ModuleGraph, program: TrainingProgram) -> ModuleGraph:
            return node_data.with_gates(trained, ctx.task_id, {n: g.binary() for n, g in attention.items()})

        return Training(
            gates=attention,
            train_masks=train_masks,
            start=start,
            penalty=penalty,
            before_step=annealing.before_step,
            after_step=clamp,
            finish=finish,
        )

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """The shared layers keep training for later tasks (their used weights are held by the masks);
        the task's head is frozen."""
        return ops.freeze(chosen, [chosen.head(ctx.task_id)])

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float:
        """The share of the gated units this task opened that no earlier task used."""
        return unit_gates.newly_used_share(graph, self.layers(ctx), ctx.task_id)

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per gated layer: the units this task uses, those it is the first to use, and those every task
        so far leaves free (later tasks' capacity)."""
        layers = []
        for i, node_id in enumerate(self.layers(ctx)):
            gate = committed.node(node_id).gates[ctx.task_id] > 0.5
            earlier = unit_gates.used_before(committed, node_id, ctx.task_id)
            units = gate.numel()
            layers.append(
                {
                    "layer": i,
                    "units": units,
                    "used": int(gate.sum()) / units,
                    "newly_used": int((gate & ~earlier).sum()) / units,
                    "free": int((~(gate | earlier)).sum()) / units,
                }
            )
        return {"capacity": layers, "capacity_used": self.capacity_used(committed, ctx)}
