"""XdG: context-dependent gating (Masse, Grant & Freedman, PNAS 2018, "Alleviating catastrophic
forgetting using context-dependent gating and synaptic stabilization").

One network shared by every task, every weight trained by every task; per task a head, and a fixed random
gate on every hidden layer that silences `gated_fraction` of its units (80% in the paper's MNIST and
ImageNet runs, 75% for CIFAR): a silenced unit outputs 0 for that task, so neither its incoming nor its
outgoing weights get any gradient from the task's loss. Gates are drawn once per task and layer from the
task's seed (so a resumed run draws the same) and stored on the nodes: the task's view multiplies each
hidden layer's output by them, in training and at test. Gating alone does not stop forgetting (the open
sets of two tasks overlap and the input layer is shared); the paper pairs it with a synaptic stabiliser,
SI (c = 0.035, xi = 0.01 on permuted MNIST) or EWC (lambda = 10), one regulariser in
`train.stabilisers` added to the task's training.

Departures: the gate opens exactly round((1 - gated_fraction) * units) units per layer (the authors' code
draws each unit open with probability 1 - gated_fraction: on a 100-unit layer the open count would vary
by +-4); conv layers are gated per channel (the paper froze pretrained conv layers and gated only dense
ones); no dropout, and Adam without the code's per-variable update-norm clip. With `search: true` each
task searches its gated fraction, single- or multi-objective against `capacity_used` (the share of units
the task keeps open).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import torch

from growsearch.methods.toolkit import (
    IMPORTANCE,
    KINDS,
    Candidate,
    Decisions,
    Method,
    ModuleGraph,
    Retrain,
    Stabiliser,
    TaskContext,
    Training,
    TrainingProgram,
    TrainingRun,
    derived_seed,
    node_data,
    ops,
    require,
    unit_gates,
)

PREFIX = "shared"


@dataclass(frozen=True)
class XdGOptions:
    gated_fraction: float = 0.8  # the share of each hidden layer's units silenced per task
    stabiliser: str = "si"  # si, ewc or none
    strength: float = 10.0  # SI's c (the paper's 0.035 on permuted MNIST does nothing on small runs)
    damping: float = 0.01  # SI's xi
    fisher_samples: int = 1024  # EWC: training samples the Fisher averages over
    search: bool = False  # true: each task searches its gated fraction
    gated_fraction_range: tuple[float, float] = (0.5, 0.95)

    def validate(self, where: str) -> None:
        require(0 <= self.gated_fraction < 1, f"{where}.gated_fraction", "expected a number in [0, 1)")
        require(self.stabiliser in KINDS, f"{where}.stabiliser", f"expected one of {', '.join(KINDS)}")
        require(self.strength >= 0, f"{where}.strength", "expected a number >= 0")
        require(self.damping > 0, f"{where}.damping", "expected a number > 0")
        require(self.fisher_samples >= 1, f"{where}.fisher_samples", "expected an integer >= 1")
        low, high = self.gated_fraction_range
        require(0 <= low <= high < 1, f"{where}.gated_fraction_range", "expected [low, high] within [0, 1)")


def draw_gate(units: int, gated_fraction: float, seed: int) -> torch.Tensor:
    """A gate opening exactly round((1 - gated_fraction) * units) units (at least one), drawn from `seed`."""
    open_units = max(1, round((1 - gated_fraction) * units))
    chosen = torch.randperm(units, generator=torch.Generator().manual_seed(seed))[:open_units]
    gate = torch.zeros(units)
    gate[chosen] = 1.0
    return gate


class XdG(Method):
    name = "xdg"
    paper = (
        "Masse, Grant & Freedman 2018, Alleviating Catastrophic Forgetting Using Context-Dependent Gating "
        "and Synaptic Stabilization"
    )
    scenarios = ("task-il",)
    Options = XdGOptions
    backbones = ("mlp", "conv")
    backbone_note = "its gates silence units of dense or conv layers"

    def layers(self, ctx: TaskContext) -> list[str]:
        return ops.shared_layer_ids(PREFIX, len(ctx.specs))

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {"gated_fraction": trial.suggest_float("gated_fraction", *self.options.gated_fraction_range)}

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        fraction = float(decisions.get("gated_fraction", self.options.gated_fraction))
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id, owners=False)
        layers = self.layers(ctx)
        unit_gates.gated_layers(graph, layers)
        gates = {
            node_id: draw_gate(unit_gates.n_units(graph, node_id), fraction, derived_seed(ctx.seed, i))
            for i, node_id in enumerate(layers)
        }
        graph = node_data.with_gates(graph, ctx.task_id, gates)
        graph = ops.add_head(graph, ctx.task_id, layers[-1], ctx.n_outputs)
        return Candidate(graph, decisions={"gated_fraction": fraction}, training=self.training(graph, ctx))

    def training(self, graph: ModuleGraph, ctx: TaskContext) -> Training:
        """The shared layers trained under the stabiliser (built from what earlier tasks made important),
        which consolidates this task's importance after training."""
        options = self.options
        stabiliser = Stabiliser(
            options.stabiliser,
            options.strength,
            graph,
            self.layers(ctx),
            damping=options.damping,
            fisher_samples=options.fisher_samples,
            seed=ctx.seed,
        )

        def start(run: TrainingRun) -> None:
            stabiliser.bind(run.program)

        def finish(trained: ModuleGraph, program: TrainingProgram) -> ModuleGraph:
            return stabiliser.consolidate(trained, program, ctx.task.train)

        return Training(
            start=start,
            penalty=stabiliser.penalty,
            before_step=stabiliser.before_step,
            after_step=stabiliser.after_step,
            finish=finish,
        )

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """The shared layers train on for later tasks (only the stabiliser holds them); the head freezes."""
        return ops.freeze(chosen, [chosen.head(ctx.task_id)])

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float:
        """The share of the gated units this task keeps open."""
        gates = [graph.node(n).gates[ctx.task_id] for n in self.layers(ctx)]
        return float(sum(g.sum() for g in gates) / sum(g.numel() for g in gates))

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per gated layer: the units open for this task, and how many of them earlier tasks also use;
        the stabiliser's mean importance after the task."""
        layers = []
        for i, node_id in enumerate(self.layers(ctx)):
            node = committed.node(node_id)
            gate = node.gates[ctx.task_id] > 0.5
            shared = gate & unit_gates.used_before(committed, node_id, ctx.task_id)
            importance = [v for k, v in node.state.items() if k.startswith(IMPORTANCE)]
            layers.append(
                {
                    "layer": i,
                    "units": gate.numel(),
                    "open": int(gate.sum()),
                    "open_for_earlier_tasks_too": int(shared.sum()),
                    "mean_importance": float(torch.cat([v.flatten() for v in importance]).mean())
                    if importance
                    else 0.0,
                }
            )
        return {
            "stabiliser": self.options.stabiliser,
            "gates": layers,
            "capacity_used": self.capacity_used(committed, ctx),
        }
