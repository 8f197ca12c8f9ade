"""CLNP: continual learning via neural pruning (Golkar, Kagan & Cho 2019, arXiv:1903.04476).

One network of fixed capacity shared by every task, and a head per task. Task t trains the units (conv:
channels) no earlier task keeps, and the head, with an L1 penalty on the weights it trains: the paper's
sparsifier, as best we can tell (L1 weight regularisation, which with ReLU leaves many units silent; a
review of the paper says the same; `sparsity: activations` puts the L1 on the free units' mean
activations instead). Then each free unit's mean post-ReLU activation on t's training data (conv: over
samples and positions) is measured and the free units below a threshold are pruned: graceful forgetting
picks the largest threshold whose pruned network's validation accuracy is within `tolerance` (the
paper's m) of the unpruned one's. Task t's active units, stored as its gate `gates[t]`, are the units
earlier tasks keep and the free ones it keeps; their rows (incoming weights and biases) are held from
then on. The weights from units no task <= t keeps into units it keeps (the interference weights), and
its head's columns reading such units, are set to zero and, held, stay zero: later tasks, training the
free units (and the weights from active into free units), never change an old task's activations, so
its outputs are bit-identical after later tasks (even without its gate). The units t pruned are free
again. The record shows per layer and task the units active, free before, newly claimed and still free,
and the threshold, the accuracies it was chosen by, and the earlier units active on t's data (reuse).

The pruning runs at the end of the task's last training step, so the last epoch's validation accuracy
(what the search is told) is the pruned network's. With `search: true` each task searches the tolerance
and the L1 strength with Optuna, single-objective or against `capacity_used` (the share of units the task
newly claims).

Departures, each for a reason: no reference code was found and the paper's numbers (L1 strength, m,
optimiser, epochs) could not be read, so the defaults are calibrated on split-digits (clnp.yaml); a free
unit is re-initialised when a task starts (a unit an earlier task pruned is mostly a dead ReLU, which
would never train again); nothing is fine-tuned after pruning (a retraining step could not be confirmed
in the paper, and the commit's `retrain` cannot hold the old tasks' rows); one threshold serves every
layer; a conv layer's statistic is taken after its max-pool (the node's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn

from growsearch.methods import _clnp_units as units
from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    GraphError,
    Method,
    ModuleGraph,
    Retrain,
    StepOutcome,
    TaskContext,
    Training,
    TrainingProgram,
    TrainingRun,
    accuracy,
    node_data,
    ops,
    require,
    run_in_batches,
    unit_gates,
)

PREFIX = "shared"
SPARSITY = ("weights", "activations")


@dataclass(frozen=True)
class CLNPOptions:
    l1: float = 3e-4  # alpha: weight of the L1 penalty
    sparsity: str = "weights"  # the paper's L1 on weights; "activations": on the free units' activations
    tolerance: float = 0.01  # m: the validation accuracy pruning may cost (graceful forgetting)
    search: bool = False  # true: each task searches tolerance and l1
    tolerance_range: tuple[float, float] = (0.0, 0.1)
    l1_range: tuple[float, float] = (1e-5, 1e-2)

    def validate(self, where: str) -> None:
        require(self.l1 >= 0, f"{where}.l1", "expected a number >= 0")
        require(self.sparsity in SPARSITY, f"{where}.sparsity", f"expected one of {list(SPARSITY)}")
        require(0 <= self.tolerance <= 1, f"{where}.tolerance", "expected a number in [0, 1]")
        low, high = self.tolerance_range
        require(0 <= low <= high <= 1, f"{where}.tolerance_range", "expected [low, high] in [0, 1]")
        low, high = self.l1_range
        require(0 < low <= high, f"{where}.l1_range", "expected [low, high] with 0 < low <= high")


class _UnitMask(nn.Module):
    """A layer's units in the view of the task being trained: multiplies its output by 1 (kept) or 0
    (pruned) per unit, all 1 until the pruning. With `keep_last` it keeps the last output it saw (an L1
    on activations), and it sums its outputs per unit while `sums` is set (the pruning statistic)."""

    def __init__(self, n_units: int):
        super().__init__()
        self.register_buffer("values", torch.ones(n_units))
        self.keep_last = False
        self.last: torch.Tensor | None = None
        self.sums: list[Any] | None = None  # [per-unit sums, values summed per unit]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.keep_last:
            self.last = x
        if self.sums is not None:
            total, count = units.unit_sums(x.detach())
            self.sums = [self.sums[0] + total, self.sums[1] + count]
        return x * self.values.view(1, -1, *([1] * (x.dim() - 2)))


class _Pruning:
    """Task t's pruning: the statistic, the threshold, the kept units; what it did goes to `record`."""

    def __init__(
        self, ctx: TaskContext, layers: list[str], before: dict[str, torch.Tensor], tolerance: float
    ):
        self.ctx, self.layers, self.before, self.tolerance = ctx, layers, before, tolerance
        self.masks = {n: _UnitMask(before[n].numel()) for n in layers}
        self.record: dict[str, Any] | None = None
        self.view: nn.Module | None = None
        self.last_step = 0

    def start(self, run: TrainingRun) -> None:
        self.view, self.last_step = run.program.full.module, run.total_steps

    def at_the_last_step(self, outcome: StepOutcome) -> None:
        """Prune after the last step, so the last epoch's validation measures the pruned network."""
        if outcome.step == self.last_step and self.view is not None:
            self.prune(self.view)

    def mean_activations(self, view: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
        for mask in self.masks.values():
            mask.sums = [0.0, 0]
        run_in_batches(view, [self.ctx.task.train.x.to(device)])
        means = {n: (m.sums[0] / max(m.sums[1], 1)).cpu() for n, m in self.masks.items()}
        for mask in self.masks.values():
            mask.sums = None
        return means

    def keep(self, activations: dict[str, torch.Tensor], threshold: float) -> None:
        for n, mask in self.masks.items():
            kept = units.kept_units(self.before[n], activations[n], threshold)
            mask.values.copy_(kept.to(mask.values))

    def prune(self, view: nn.Module) -> None:
        device = next(view.parameters()).device
        val = self.ctx.task.val
        x_val, y_val = val.x.to(device), val.y.to(device)
        with torch.no_grad():
            activations = self.mean_activations(view, device)

            def accuracy_at(threshold: float) -> float:
                self.keep(activations, threshold)
                return accuracy(view, [x_val], y_val)

            free = torch.cat([activations[n][~self.before[n]] for n in self.layers])
            choice = units.choose_threshold(free, accuracy_at, self.tolerance)
            self.keep(activations, choice.threshold)
        reused = [int((activations[n][self.before[n]] >= choice.threshold).sum()) for n in self.layers]
        self.record = {
            "threshold": choice.threshold,
            "val_accuracy_unpruned": choice.unpruned_accuracy,
            "val_accuracy_pruned": choice.accuracy,
            "thresholds_evaluated": choice.evaluated,
            "reused_units": reused,  # per layer: earlier tasks' units active on this task's data
        }


class _L1:
    """alpha times the L1 norm of what the task trains: its weights (the head's included), or its free
    units' mean activations (`sparsity: activations`)."""

    def __init__(self, l1: float, on: str, pruning: _Pruning, before: dict[str, torch.Tensor], head: str):
        self.l1, self.on, self.pruning, self.head = l1, on, pruning, head
        self.free = {n: (~b).float() for n, b in before.items()}
        self.trained: list[tuple[nn.Parameter, torch.Tensor | None]] = []
        if on == "activations":
            for mask in pruning.masks.values():
                mask.keep_last = True

    def bind(self, program: TrainingProgram) -> None:
        """The weights it penalises: the free units' incoming weights (their trainable entries) and the
        head's."""
        if self.on != "weights":
            return
        layers = set(self.pruning.layers)
        trained = [(m.parameter, m.trainable) for m in program.full.masked if m.node_id in layers]
        self.trained = [(p, t) for p, t in trained if p.dim() >= 2]
        self.trained += [(p, None) for p in program.full.node_modules[self.head].parameters() if p.dim() >= 2]

    def __call__(self) -> torch.Tensor:
        if self.on == "weights":
            return self.l1 * sum((p.abs() if t is None else p.abs() * t).sum() for p, t in self.trained)
        total = torch.zeros(())
        for n, mask in self.pruning.masks.items():
            dims = [0, *range(2, mask.last.dim())]  # mean over samples (and positions)
            per_unit = mask.last.abs().mean(dim=dims)
            total = total + (per_unit * self.free[n].to(per_unit.device)).sum()
        return self.l1 * total


class CLNP(Method):
    name = "clnp"
    paper = "Golkar, Kagan & Cho 2019, Continual Learning via Neural Pruning"
    scenarios = ("task-il",)
    Options = CLNPOptions
    backbones = ("mlp", "conv")
    backbone_note = "its unit pruning works on dense or conv units"

    def layers(self, ctx: TaskContext) -> list[str]:
        return ops.shared_layer_ids(PREFIX, len(ctx.specs))

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {
            "tolerance": trial.suggest_float("tolerance", *self.options.tolerance_range),
            "l1": trial.suggest_float("l1", *self.options.l1_range, log=True),
        }

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id, owners=False)
        unit_gates.gated_layers(graph, self.layers(ctx))
        for node_id in self.layers(ctx):
            if graph.node(node_id).spec.activation != "relu":
                raise GraphError(f"CLNP prunes by mean post-ReLU activation; {node_id!r} is not a ReLU layer")
        graph = ops.add_head(graph, ctx.task_id, self.layers(ctx)[-1], ctx.n_outputs)
        if ctx.task_id > 0:
            graph = units.reinitialise_free(graph, self.layers(ctx), ctx.task_id)
        settings = {"tolerance": self.options.tolerance, "l1": self.options.l1, **decisions}
        mechanism: dict[str, Any] = {}  # the pruning's record, once the training has pruned
        training = self.training(graph, ctx, settings, mechanism)
        return Candidate(graph, decisions=settings, mechanism=mechanism, training=training)

    def training(
        self, graph: ModuleGraph, ctx: TaskContext, settings: Decisions, mechanism: dict[str, Any]
    ) -> Training:
        """The free units' rows trained with the L1 penalty; the pruning at the last step; then the task's
        gates stored and the interference weights severed (what the pruning did goes to `mechanism`)."""
        layers, task = self.layers(ctx), ctx.task_id
        before = {n: unit_gates.used_before(graph, n, task) for n in layers}
        # only the rows (incoming weights and bias) of units no earlier task keeps train
        train_masks = {n: unit_gates.connection_masks(graph, n, ~before[n], None) for n in layers}
        pruning = _Pruning(ctx, layers, before, float(settings["tolerance"]))
        l1 = float(settings["l1"])
        penalty = _L1(l1, self.options.sparsity, pruning, before, graph.head(task)) if l1 != 0 else None

        def start(run: TrainingRun) -> None:
            pruning.start(run)
            if penalty is not None:
                penalty.bind(run.program)

        def finish(trained: ModuleGraph, program: TrainingProgram) -> ModuleGraph:
            if pruning.record is None:  # training ended another way than by its last step
                pruning.prune(program.full.module)
            trained = node_data.with_gates(trained, task, {n: m.values for n, m in pruning.masks.items()})
            trained, severed = units.sever_interference(trained, layers, task)
            mechanism.update({**pruning.record, "interference_weights_zeroed": severed})
            return trained

        return Training(
            gates=pruning.masks,
            train_masks=train_masks,
            start=start,
            penalty=penalty,
            after_step=pruning.at_the_last_step,
            finish=finish,
        )

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """The pruning, gates and severed weights came with the trained candidate; the shared layers keep
        training for later tasks (the rows of active units held by the masks); the head is frozen."""
        return ops.freeze(chosen, [chosen.head(ctx.task_id)])

    def capacity_used(self, graph: ModuleGraph, ctx: TaskContext) -> float:
        """The share of the shared units this task keeps that no earlier task kept."""
        return unit_gates.newly_used_share(graph, self.layers(ctx), ctx.task_id)

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per shared layer, in units: those active for this task (earlier tasks' and its own), those free
        when it started (it trained them all), those of these it claims, and those it pruned, free for
        later tasks."""
        layers = []
        for i, node_id in enumerate(self.layers(ctx)):
            active = committed.node(node_id).gates[ctx.task_id] > 0.5
            earlier = unit_gates.used_before(committed, node_id, ctx.task_id)
            layers.append(
                {
                    "layer": i,
                    "units": active.numel(),
                    "active": int(active.sum()),
                    "free_before": int((~earlier).sum()),
                    "newly_claimed": int((active & ~earlier).sum()),
                    "free": int((~active).sum()),
                }
            )
        return {"capacity": layers, "capacity_used": self.capacity_used(committed, ctx)}
