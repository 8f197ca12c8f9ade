"""DEN: Lifelong Learning with Dynamically Expandable Networks (Yoon, Yang, Lee & Hwang, ICLR 2018).

One shared dense network whose entries are timestamped: every weight is owned by the task that added it
(owner masks, as PackNet's), and task t's view uses the entries of tasks <= t, so units added later are
invisible to older tasks. The first task trains with L1 sparsity. For task t > 0, inside `candidate`:
1. selective retraining: train the new head alone (L1); a breadth-first search from the head along the
   non-zero weights selects the units it depends on; retrain only those weights (L2, plus
   `drift_l2 * ||W - W^{t-1}||^2`);
2. dynamic expansion: if that loss stays above tau, add k units per layer and train them with L1 and
   group sparsity (one group per new unit's incoming weights); units left with no weight are dropped;
3. split/duplication: a unit whose incoming weights drifted by rho = ||w^t - w^{t-1}||_2 > sigma is
   duplicated: the copy (owned by t) carries the retrained weights, the original goes back to W^{t-1};
   then the task's own entries are retrained (L1, L2).
Old entries always return to W^{t-1} here, units below sigma included (the paper keeps their small drift
and accepts the small forgetting): old tasks' outputs are preserved exactly, and the new task reads its
retrained function through its copies. Every entry is then claimed by t; the controller's pass
(`training.epochs`, at least 1) refits only the new head. Dense layers only; task-IL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
import torch
import torch.nn.functional as F
from torch import nn

from growsearch.config_schema import require
from growsearch.data.task import Split
from growsearch.errors import ConfigError, TrainingError
from growsearch.graph.module_graph import ModuleGraph
from growsearch.graph.specs import Head, Linear
from growsearch.grow import operators as ops
from growsearch.grow.units import (
    append_units,
    dense_parameters,
    drop_empty_units,
    expand_units,
    reachable_units,
    split_units,
)
from growsearch.methods import register_method
from growsearch.methods.base import Method, TaskContext
from growsearch.search.training import TrainingConfig

PREFIX = "den"
SHARED = PREFIX + "/L{}"
ACT = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, None: lambda x: x}


@dataclass(frozen=True)
class DENOptions:
    loss_threshold: float = 0.01  # tau
    split_threshold: float = 0.05  # sigma
    expand_units: int = 10  # k
    l1: float = 1e-5
    l2: float = 1e-4
    group_lasso: float = 1e-3
    drift_l2: float = 0.5
    stage_epochs: int = 5
    head_epochs: int = 1
    search_thresholds: bool = False
    loss_threshold_range: tuple[float, ...] = (1e-3, 1.0)
    split_threshold_range: tuple[float, ...] = (1e-2, 1.0)

    def validate(self, where: str) -> None:
        for name in ("loss_threshold", "split_threshold", "l1", "l2", "group_lasso", "drift_l2"):
            require(getattr(self, name) >= 0, f"{where}.{name}", "expected a number >= 0")
        require(self.expand_units >= 1, f"{where}.expand_units", "expected an integer >= 1")
        require(self.stage_epochs >= 1, f"{where}.stage_epochs", "expected an integer >= 1")
        require(self.head_epochs >= 1, f"{where}.head_epochs", "expected an integer >= 1")
        for name in ("loss_threshold_range", "split_threshold_range"):
            low_high = getattr(self, name)
            ok = len(low_high) == 2 and 0 < low_high[0] < low_high[1]
            require(ok, f"{where}.{name}", "expected [low, high] with 0 < low < high")


@dataclass
class _Net:
    """The new task's network as tensors: `w[l]` is (units_l, units_{l-1}); the head is last."""

    w: list[torch.Tensor]
    b: list[torch.Tensor]
    acts: list[str | None]

    def forward(self, x: torch.Tensor, w: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        h = x.flatten(1)
        for weight, bias, act in zip(w, b, [*self.acts, None], strict=True):
            h = ACT[act](F.linear(h, weight, bias))
        return h


@dataclass
class _Stage:
    """What one training stage may change (bool masks like `w` and `b`) and how it is regularised."""

    w: list[torch.Tensor]
    b: list[torch.Tensor]
    anchor: list[torch.Tensor] | None = None  # drift_l2 pulls trainable hidden entries towards these
    groups: dict[int, torch.Tensor] | None = None  # layer -> rows under group sparsity


@register_method
class DEN(Method):
    name = "den"
    paper = "Yoon, Yang, Lee & Hwang 2018, Lifelong Learning with Dynamically Expandable Networks (ICLR)"
    scenarios = ("task-il",)
    Options = DENOptions

    def trial_budget(self, ctx: TaskContext) -> int:
        return 1 if ctx.task_id == 0 else self.space.search.n_trials or 1  # task 0 uses no threshold

    def thresholds(self, trial: optuna.Trial, ctx: TaskContext) -> tuple[float, float]:
        opts = self.options
        if not opts.search_thresholds or ctx.task_id == 0:  # the first task uses neither
            return opts.loss_threshold, opts.split_threshold
        tau = trial.suggest_float("loss_threshold", *opts.loss_threshold_range, log=True)
        return tau, trial.suggest_float("split_threshold", *opts.split_threshold_range, log=True)

    def suggest(self, trial: optuna.Trial, ctx: TaskContext) -> None:
        self.thresholds(trial, ctx)

    def candidate(self, trial: optuna.Trial, ctx: TaskContext) -> ModuleGraph:
        tau, sigma = self.thresholds(trial, ctx)
        if not all(isinstance(s, Linear) for s in ctx.specs):
            raise ConfigError("den grows dense layers: network.layers must all be linear")
        spent = [0]  # multiply-adds of the training done here
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, ctx.task_id).copy()
        shared = [SHARED.format(i) for i in range(len(ctx.specs))]
        net = self._read(graph, shared, ctx)
        if ctx.task_id == 0:
            everything = _Stage(_masks(net.w, True), _masks(net.b, True))  # L1-sparse first task
            self._fit(net, everything, ctx.task.train, self.options.stage_epochs, spent)
            old = [0] * len(shared)
            for key in ("expanded_units", "dropped_units", "split_units"):
                trial.set_user_attr(key, old)
            trial.set_user_attr("expanded", False)
        else:
            net, old = self._grow(net, trial, ctx, (tau, sigma), spent)
        trial.set_user_attr("loss_threshold", tau)
        trial.set_user_attr("split_threshold", sigma)
        trial.set_user_attr("search_macs", spent[0])
        return self._write(graph, shared, net, old, ctx)

    # ---- the three stages -------------------------------------------------------------------------------
    def _grow(
        self,
        net: _Net,
        trial: optuna.Trial,
        ctx: TaskContext,
        thresholds: tuple[float, float],
        spent: list[int],
    ) -> tuple[_Net, list[int]]:
        (tau, sigma), opts, depth = thresholds, self.options, len(net.acts)

        def fit(stage: _Stage, epochs: int) -> float:
            return self._fit(net, stage, ctx.task.train, epochs, spent)

        prev = [w.clone() for w in net.w[:depth]]
        prev_b = [b.clone() for b in net.b[:depth]]
        old = [len(b) for b in prev_b]
        head_only = _Stage(_masks(net.w, False), _masks(net.b, False))
        head_only.w[-1][:], head_only.b[-1][:] = True, True
        fit(head_only, opts.head_epochs)
        selected = reachable_units(net.w)
        stage = _Stage(_masks(net.w, False), _masks(net.b, False), anchor=prev)
        for layer in range(depth + 1):
            rows = selected[layer] if layer < depth else torch.ones(len(net.b[layer]), dtype=torch.bool)
            cols = selected[layer - 1] if layer > 0 else torch.ones(net.w[0].shape[1], dtype=torch.bool)
            stage.w[layer] = rows[:, None] & cols[None, :]
            stage.b[layer] = rows.clone()
        loss = fit(stage, opts.stage_epochs)
        expanded, dropped = loss >= tau, [0] * depth
        if expanded:
            groups = expand_units(net.w, net.b, opts.expand_units)
            stage = _Stage(_masks(net.w, False), _masks(net.b, False), groups=groups)
            for layer in range(depth + 1):
                new_rows = groups.get(layer, torch.arange(0))
                stage.w[layer][new_rows] = True
                stage.b[layer][new_rows] = True
                if layer > 0:
                    stage.w[layer][:, groups[layer - 1]] = True
            stage.w[-1][:], stage.b[-1][:] = True, True
            fit(stage, opts.stage_epochs)
            dropped = drop_empty_units(net.w, net.b, groups)
        drift = [(net.w[i][: old[i], : prev[i].shape[1]] - prev[i]).norm(dim=1) for i in range(depth)]
        split = [(d > sigma).nonzero().flatten() for d in drift]
        free = split_units(net.w, net.b, prev, prev_b, split)
        fit(_Stage(*free), opts.stage_epochs)
        trial.set_user_attr("selected_units", [int(s.sum()) for s in selected[:depth]])
        trial.set_user_attr("selective_loss", float(loss))
        trial.set_user_attr("expanded", bool(expanded))
        added = [len(b) - o - len(s) for b, o, s in zip(net.b, old, split, strict=False)]
        trial.set_user_attr("expanded_units", added)
        trial.set_user_attr("dropped_units", dropped)
        trial.set_user_attr("split_units", [len(s) for s in split])
        return net, old

    # ---- tensors <-> graph -----------------------------------------------------------------------------
    def _read(self, graph: ModuleGraph, shared: list[str], ctx: TaskContext) -> _Net:
        w, b, acts = [], [], []
        for node_id in shared:
            node = graph.node(node_id)
            weight, bias = dense_parameters(node)
            w.append(node.weights[weight].clone())
            b.append(node.weights[bias].clone())
            acts.append(node.spec.activation)
        head = nn.Linear(w[-1].shape[0], ctx.n_outputs)
        return _Net([*w, head.weight.detach().clone()], [*b, head.bias.detach().clone()], acts)

    def _write(
        self, graph: ModuleGraph, shared: list[str], net: _Net, old: list[int], ctx: TaskContext
    ) -> ModuleGraph:
        """Old entries are left as they are; new units are appended; the head is added; t owns the rest."""
        t = ctx.task_id
        for i, node_id in enumerate(shared):
            if ctx.task_id == 0:
                node = graph.node(node_id)
                weight, bias = dense_parameters(node)
                node.weights[weight], node.weights[bias] = net.w[i].clone(), net.b[i].clone()
                continue
            columns = {}
            if i + 1 < len(shared):
                columns[shared[i + 1]] = net.w[i + 1][: old[i + 1], old[i] :]
            graph = append_units(graph, node_id, net.w[i][old[i] :], net.b[i][old[i] :], columns)
        head = Head(net.w[-1].shape[1], ctx.n_outputs)
        graph.add(f"t{t}/head", head, [shared[-1]], t, weights={"weight": net.w[-1], "bias": net.b[-1]})
        graph.set_head(t, f"t{t}/head")
        graph = ops.claim_free(graph, t, shared)
        return ops.freeze(graph, shared)  # every entry is owned now: the controller refits the head only

    # ---- training ----------------------------------------------------------------------------------------
    def _fit(self, net: _Net, stage: _Stage, split: Split, epochs: int, spent: list[int]) -> float:
        """Train the stage's entries (cross-entropy + L2 + drift; L1 and group-lasso proximal steps after
        each step, as the reference implementation applies them) and return the last epoch's mean loss."""
        config: TrainingConfig = self.space.training
        opts, device = self.options, config.torch_device()
        w = [t.to(device, copy=True).requires_grad_(True) for t in net.w]
        b = [t.to(device, copy=True).requires_grad_(True) for t in net.b]
        masks = [m.to(device) for m in [*stage.w, *stage.b]]
        anchor = None if stage.anchor is None else [a.to(device) for a in stage.anchor]
        params = [*w, *b]
        for p, m in zip(params, masks, strict=True):
            p.register_hook(lambda grad, m=m: grad * m)
        fixed = [p.detach().clone() for p in params]
        if config.optimizer == "adam":
            optimizer = torch.optim.Adam(params, lr=config.lr)
        else:
            optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
        generator = torch.Generator().manual_seed(int(torch.randint(2**31 - 1, ()).item()))
        x, y, n = split.x.to(device), split.y.to(device), len(split)
        total = 0.0
        for _ in range(epochs):
            total = 0.0
            for index in torch.randperm(n, generator=generator).to(device).split(config.batch_size):
                ce = F.cross_entropy(net.forward(x[index], w, b), y[index])
                value = ce.item()
                if not math.isfinite(value):
                    raise TrainingError(f"DEN: the training loss became {value}; try a lower training.lr")
                loss = ce + opts.l2 / 2 * sum(
                    ((p * m) ** 2).sum() for p, m in zip(params, masks, strict=True)
                )
                if anchor is not None:
                    pairs = zip(w, anchor, masks, strict=False)
                    loss = loss + opts.drift_l2 / 2 * sum((((p - a) * m) ** 2).sum() for p, a, m in pairs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for p, m, f in zip(params, masks, fixed, strict=True):
                        p.copy_(torch.where(m, p, f))
                    for p, m in zip(w, masks, strict=False):  # L1: soft threshold of the trainable entries
                        p.copy_(torch.where(m, p.sign() * (p.abs() - opts.l1).clamp(min=0), p))
                    for layer, rows in (stage.groups or {}).items():
                        norms = w[layer][rows].norm(dim=1, keepdim=True)
                        w[layer][rows] *= (1 - opts.group_lasso / norms.clamp(min=1e-12)).clamp(min=0)
                total += value * len(index)
        spent[0] += 3 * sum(t.numel() for t in net.w) * n * epochs
        net.w, net.b = [p.detach().cpu() for p in w], [p.detach().cpu() for p in b]
        return total / max(n, 1)

    def decisions(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        keys = ("loss_threshold", "split_threshold", "expanded", "expanded_units", "split_units")
        return {key: trial.user_attrs.get(key) for key in keys}


def _masks(tensors: list[torch.Tensor], value: bool) -> list[torch.Tensor]:
    return [torch.full(t.shape, value, dtype=torch.bool) for t in tensors]
