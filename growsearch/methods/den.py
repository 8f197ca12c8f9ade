"""DEN: Lifelong Learning with Dynamically Expandable Networks (Yoon, Yang, Lee & Hwang, ICLR 2018).

One shared dense network whose entries are timestamped: every weight is owned by the task that added it
(owner masks, as PackNet's), and task t's view uses the entries of tasks <= t, so units added later are
invisible to older tasks. The first task trains with L1 sparsity. For task t > 0, inside `build`:
1. selective retraining: train the new head alone (L1); a breadth-first search from the head along the
   non-zero weights selects the units it depends on; retrain only those weights (L2, plus
   `drift_l2 * ||W - W^{t-1}||^2`);
2. dynamic expansion: if that loss stays above tau, add k units per layer and train them with L1 and
   group sparsity (one group per new unit's incoming weights); units left with no weight are dropped;
3. split/duplication: a unit whose incoming weights drifted by rho = ||w^t - w^{t-1}||_2 > sigma is
   duplicated: the copy (owned by t) carries the retrained weights, the original goes back to W^{t-1};
   then the task's own entries are retrained (L1, L2).
Old entries always return to W^{t-1} here, units below sigma included (the paper keeps their small drift
and accepts the small forgetting): old tasks' outputs are preserved to float rounding, not bit for bit (a
widened layer sums its inputs in another order: they move by about 1e-6, 1.4e-6 measured; the test bounds
it at 1e-5), and the new task reads its retrained function through its copies. Every entry is then
claimed by t; the search's training of the candidate (`training.epochs`, at least 1) refits only the new
head. Dense layers only; task-IL.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch import nn

from growsearch.methods.toolkit import (
    INPUT,
    Candidate,
    ConfigError,
    Decisions,
    FitResult,
    Head,
    Linear,
    Method,
    Minibatches,
    ModuleGraph,
    SearchPlan,
    StepOutcome,
    TaskContext,
    Training,
    compile_view,
    fit,
    head_node,
    node_data,
    ops,
    require,
    resolve_device,
    units,
    write_back,
)

PREFIX = "den"
SHARED = PREFIX + "/L{}"


@dataclass(frozen=True)
class DENOptions:
    loss_threshold: float = 0.01  # tau
    split_threshold: float = 0.05  # sigma
    expand_units: int = 10  # k
    l1: float = 1e-5
    l2: float = 1e-4
    group_lasso: float = 1e-3
    drift_l2: float = 0.5
    # stage lengths in minibatch iterations, as the reference counts them: every stage runs up to
    # `max_iterations`, stopping early once the mean of the last `loss_window` validation losses (checked
    # every `check_every` iterations) moves by less than `stop_tolerance`; the new head alone trains for
    # `head_iterations` before the selection
    max_iterations: int = 4300
    head_iterations: int = 430
    check_every: int = 100
    loss_window: int = 10
    stop_tolerance: float = 1e-6
    search_thresholds: bool = False
    loss_threshold_range: tuple[float, ...] = (1e-3, 1.0)
    split_threshold_range: tuple[float, ...] = (1e-2, 1.0)

    def validate(self, where: str) -> None:
        for name in ("loss_threshold", "split_threshold", "l1", "l2", "group_lasso", "drift_l2"):
            require(getattr(self, name) >= 0, f"{where}.{name}", "expected a number >= 0")
        for name in ("expand_units", "max_iterations", "head_iterations", "check_every", "loss_window"):
            require(getattr(self, name) >= 1, f"{where}.{name}", "expected an integer >= 1")
        require(self.stop_tolerance >= 0, f"{where}.stop_tolerance", "expected a number >= 0")
        for name in ("loss_threshold_range", "split_threshold_range"):
            low_high = getattr(self, name)
            ok = len(low_high) == 2 and 0 < low_high[0] < low_high[1]
            require(ok, f"{where}.{name}", "expected [low, high] with 0 < low < high")


@dataclass(frozen=True)
class DENStages:
    """What DEN's stages did for a task, recorded on its trial (per hidden layer where a list)."""

    stage_iterations: list[int]  # minibatches each stage ran (the early stopping cuts them short)
    selected_units: list[int] | None  # units the breadth-first search from the new head selected
    old_units: list[int]  # units before the task (the selection's "out of")
    selective_loss: float | None  # the selective retraining's last loss, compared with tau
    expanded: bool
    expanded_units: list[int]  # units added and kept by group sparsity
    dropped_units: list[int]  # added units group sparsity left without weights
    split_units: list[int]  # old units that drifted beyond sigma and were duplicated


@dataclass
class _Net:
    """The new task's network as tensors (`w[l]` is (units_l, units_{l-1}); the head is last), the form
    DEN's unit selection, expansion and split work on; it trains as a graph (`grow.units.dense_stack`)."""

    w: list[torch.Tensor]
    b: list[torch.Tensor]
    acts: list[str | None]


@dataclass
class _Stage:
    """What one training stage may change (bool masks like `w` and `b`) and how it is regularised."""

    w: list[torch.Tensor]
    b: list[torch.Tensor]
    anchor: list[torch.Tensor] | None = None  # drift_l2 pulls trainable hidden entries towards these
    groups: dict[int, torch.Tensor] | None = None  # layer -> rows under group sparsity


class DEN(Method):
    name = "den"
    paper = "Yoon, Yang, Lee & Hwang 2018, Lifelong Learning with Dynamically Expandable Networks (ICLR)"
    scenarios = ("task-il",)
    Options = DENOptions
    backbones = ("mlp",)
    backbone_note = "its selective retraining, expansion and split work on dense layers"

    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """One trial for the first task, which uses no threshold; then `search.n_trials`."""
        return SearchPlan(budget=1) if ctx.task_id == 0 else super().search_plan(ctx)

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        opts = self.options
        if not opts.search_thresholds or ctx.task_id == 0:  # the first task uses neither
            return {}
        return {
            "loss_threshold": trial.suggest_float("loss_threshold", *opts.loss_threshold_range, log=True),
            "split_threshold": trial.suggest_float("split_threshold", *opts.split_threshold_range, log=True),
        }

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        tau = float(decisions.get("loss_threshold", self.options.loss_threshold))
        sigma = float(decisions.get("split_threshold", self.options.split_threshold))
        if not all(isinstance(s, Linear) for s in ctx.specs):
            raise ConfigError("den grows dense layers: network.layers must all be linear")
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id).copy()
        shared = [SHARED.format(i) for i in range(len(ctx.specs))]
        net = self._read(graph, shared, ctx)
        if ctx.task_id == 0:
            everything = _Stage(_masks(net.w, True), _masks(net.b, True))  # L1-sparse first task
            steps = self._fit(net, everything, ctx, self.options.max_iterations).steps
            old = [0] * len(shared)
            stages = DENStages([steps], None, old, None, False, old, old, old)
        else:
            net, old, stages = self._grow(net, ctx, (tau, sigma))
        decided = {"loss_threshold": tau, "split_threshold": sigma, "expanded": stages.expanded}
        return Candidate(self._write(graph, shared, net, old, ctx), decided, stages)

    # ---- the three stages -------------------------------------------------------------------------------
    def _grow(
        self, net: _Net, ctx: TaskContext, thresholds: tuple[float, float]
    ) -> tuple[_Net, list[int], DENStages]:
        (tau, sigma), opts, depth = thresholds, self.options, len(net.acts)

        iterations: list[int] = []

        def fit(stage: _Stage, limit: int) -> float:
            """Train a stage; the last minibatch's loss (what the reference compares with tau)."""
            result = self._fit(net, stage, ctx, limit)
            iterations.append(result.steps)
            return result.last_step_loss

        prev = [w.clone() for w in net.w[:depth]]
        prev_b = [b.clone() for b in net.b[:depth]]
        old = [len(b) for b in prev_b]
        head_only = _Stage(_masks(net.w, False), _masks(net.b, False))
        head_only.w[-1][:], head_only.b[-1][:] = True, True
        fit(head_only, opts.head_iterations)
        selected = units.reachable_units(net.w)
        stage = _Stage(_masks(net.w, False), _masks(net.b, False), anchor=prev)
        for layer in range(depth + 1):
            rows = selected[layer] if layer < depth else torch.ones(len(net.b[layer]), dtype=torch.bool)
            cols = selected[layer - 1] if layer > 0 else torch.ones(net.w[0].shape[1], dtype=torch.bool)
            stage.w[layer] = rows[:, None] & cols[None, :]
            stage.b[layer] = rows.clone()
        loss = fit(stage, opts.max_iterations)
        expanded, dropped = loss >= tau, [0] * depth
        if expanded:
            groups = units.expand_units(net.w, net.b, opts.expand_units)
            stage = _Stage(_masks(net.w, False), _masks(net.b, False), groups=groups)
            for layer in range(depth + 1):
                new_rows = groups.get(layer, torch.arange(0))
                stage.w[layer][new_rows] = True
                stage.b[layer][new_rows] = True
                if layer > 0:
                    stage.w[layer][:, groups[layer - 1]] = True
            stage.w[-1][:], stage.b[-1][:] = True, True
            fit(stage, opts.max_iterations)
            dropped = units.drop_empty_units(net.w, net.b, groups)
        drift = [(net.w[i][: old[i], : prev[i].shape[1]] - prev[i]).norm(dim=1) for i in range(depth)]
        split = [(d > sigma).nonzero().flatten() for d in drift]
        free = units.split_units(net.w, net.b, prev, prev_b, split)
        fit(_Stage(*free), opts.max_iterations)
        added = [len(b) - o - len(s) for b, o, s in zip(net.b, old, split, strict=False)]
        selected_units = [int(s.sum()) for s in selected[:depth]]
        stages = DENStages(
            iterations,
            selected_units,
            old,
            float(loss),
            bool(expanded),
            added,
            dropped,
            [len(s) for s in split],
        )
        return net, old, stages

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Units per layer after the task, and how sparse the weights the task sees are (L1 at work)."""
        widths, sparsity = [], []
        for i in range(len(ctx.specs)):
            node = committed.node(SHARED.format(i))
            weight, _ = units.dense_parameters(node)
            visible = (node.owners[weight] >= 0) & (node.owners[weight] <= ctx.task_id)
            widths.append(int(node.spec.out_features))
            sparsity.append(float((node.weights[weight][visible] == 0).float().mean()))
        return {"units": widths, "weight_sparsity": sparsity}

    # ---- tensors <-> graph -----------------------------------------------------------------------------
    def _read(self, graph: ModuleGraph, shared: list[str], ctx: TaskContext) -> _Net:
        w, b, acts = [], [], []
        for node_id in shared:
            node = graph.node(node_id)
            weight, bias = units.dense_parameters(node)
            w.append(node.weights[weight].clone())
            b.append(node.weights[bias].clone())
            acts.append(node.spec.activation)
        head = nn.Linear(w[-1].shape[0], ctx.n_outputs)
        return _Net([*w, head.weight.detach().clone()], [*b, head.bias.detach().clone()], acts)

    def _write(
        self, graph: ModuleGraph, shared: list[str], net: _Net, old: list[int], ctx: TaskContext
    ) -> ModuleGraph:
        """The first task's trained weights; for a later task, old entries are left as they are and its new
        units appended. Then the head is added, and t owns every free entry."""
        t = ctx.task_id
        if t == 0:
            names = {n: units.dense_parameters(graph.node(n)) for n in shared}
            trained = {n: {w: net.w[i], b: net.b[i]} for i, (n, (w, b)) in enumerate(names.items())}
            graph = node_data.with_weights(graph, trained)
        else:
            for i, node_id in enumerate(shared):
                columns = {}
                if i + 1 < len(shared):
                    columns[shared[i + 1]] = net.w[i + 1][: old[i + 1], old[i] :]
                graph = units.append_units(graph, node_id, net.w[i][old[i] :], net.b[i][old[i] :], columns)
        head = Head(net.w[-1].shape[1], ctx.n_outputs)
        graph.add(head_node(t), head, [shared[-1]], t, weights={"weight": net.w[-1], "bias": net.b[-1]})
        graph.set_head(t, head_node(t))
        graph = ops.claim_free(graph, t, shared)
        return ops.freeze(graph, shared)  # every entry is owned now: the search's training refits the head

    # ---- training ----------------------------------------------------------------------------------------
    def _fit(self, net: _Net, stage: _Stage, ctx: TaskContext, iterations: int) -> FitResult:
        """Train the stage's entries of `net` (in place) through the one trainer for up to `iterations`
        minibatches: cross-entropy + L2 + drift as the loss, L1 and group-lasso proximal steps after each
        step (as the reference implementation applies them), stopping at a validation-loss plateau."""
        config, opts = self.space.training, self.options
        device = resolve_device(config.device)
        graph = units.dense_stack(ctx.committed.input_shape, ctx.task_id, net.w, net.b, net.acts)
        node_ids = [n for n in graph.node_ids() if n != INPUT]
        names = [units.dense_parameters(graph.node(n)) for n in node_ids]
        masks = {
            n: {wn: stage.w[i], bn: stage.b[i]}
            for i, (n, (wn, bn)) in enumerate(zip(node_ids, names, strict=True))
        }
        compiled = compile_view(graph, ctx.task_id, train=True, train_masks=masks)
        compiled.module.to(device)
        for masked in compiled.masked:
            masked.trainable, masked.frozen_values = (
                masked.trainable.to(device),
                masked.frozen_values.to(device),
            )
        modules = [compiled.node_modules[n] for n in node_ids]
        w = [m.get_parameter(name) for m, (name, _) in zip(modules, names, strict=True)]
        w_masks = [mask.to(device) for mask in stage.w]
        anchor = None if stage.anchor is None else [a.to(device) for a in stage.anchor]

        def drift() -> torch.Tensor:  # selective retraining: stay near the previous task's weights
            pairs = zip(w, anchor, w_masks, strict=False)
            return opts.drift_l2 / 2 * sum((((p - a) * m) ** 2).sum() for p, a, m in pairs)

        def proximal(outcome: StepOutcome) -> None:
            for p, m in zip(w, w_masks, strict=True):  # L1: soft threshold of the trainable entries
                p.copy_(torch.where(m, p.sign() * (p.abs() - opts.l1).clamp(min=0), p))
            for layer, rows in (stage.groups or {}).items():  # group lasso: each new unit's incoming weights
                norms = w[layer][rows].norm(dim=1, keepdim=True)
                w[layer][rows] *= (1 - opts.group_lasso / norms.clamp(min=1e-12)).clamp(min=0)

        train, val = ctx.task.train, ctx.task.val
        plateau = _Plateau(compiled.module, val.x.to(device), val.y.to(device), opts)
        seed = int(torch.randint(2**31 - 1, ()).item())  # torch's RNG is seeded per trial
        result = fit(
            compiled.module,
            Minibatches([train.x.to(device)], train.y.to(device), config.batch_size, seed),
            [p for p in compiled.module.parameters() if p.requires_grad],
            # the L2 term l2/2 ||W||^2 on the trained entries is the optimiser's (coupled) weight decay
            dataclasses.replace(config.optimizer_settings(), weight_decay=config.weight_decay + opts.l2),
            steps=iterations,
            masked=compiled.masked,
            training=Training(
                penalty=drift if anchor is not None else None, after_step=proximal, should_stop=plateau
            ),
            macs_per_sample=graph.macs(graph.view(ctx.task_id)),
        )
        write_back(graph, compiled)
        net.w, net.b = units.stack_tensors(graph)
        return result


class _Plateau:
    """The reference's early stopping: every `check_every` iterations the validation loss joins a window
    of the last `loss_window` checks; training stops once the window's mean (always divided by the window
    size) moves by less than `stop_tolerance` between two checks."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, options: DENOptions):
        self.model, self.x, self.y, self.options = model, x, y, options
        self.window: deque[float] = deque(maxlen=options.loss_window)
        self.mean: float | None = None

    def __call__(self, step: StepOutcome) -> bool:
        if step.step % self.options.check_every or not len(self.y):
            return False
        with torch.no_grad():
            self.window.append(float(nn.functional.cross_entropy(self.model(self.x), self.y)))
        mean = sum(self.window) / self.options.loss_window
        previous, self.mean = self.mean, mean
        return previous is not None and abs(previous - mean) < self.options.stop_tolerance


def _masks(tensors: list[torch.Tensor], value: bool) -> list[torch.Tensor]:
    return [torch.full(t.shape, value, dtype=torch.bool) for t in tensors]
