"""MNTDP: Modular Networks with Task-Driven Priors (Veniat, Denoyer & Ranzato, ICLR 2021, "Efficient
Continual Learning with Modular Networks and Task-Driven Priors").

Every layer is a module. For a new task the candidates are local perturbations of a source task's path:
for each k in 0..L, keep the source's (frozen) modules below layer k and train new modules from layer k
up, plus a new head (k = L: only a new head; k = 0: a fresh path). The source is chosen by the
task-driven prior (a kNN on each earlier path's features of the new task, `growsearch.search.task_prior`)
or is simply the previous task. New modules of the committed path join the frozen library.

- MNTDP-D (`mntdp-d`) trains all L + 1 candidates and keeps the best on validation.
- MNTDP-S (`mntdp-s`) trains the candidates jointly under a softmax distribution over them: each
  minibatch samples one candidate, trains it, and moves the distribution toward low-loss candidates
  (REINFORCE with a running baseline); the most probable candidate is then trained to the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import optuna
import torch
from torch import nn

from growsearch.config_schema import require
from growsearch.graph.compile import compile_view, write_back
from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow import operators as ops
from growsearch.methods import register_method
from growsearch.methods.base import Method, TaskContext
from growsearch.search.samplers import make_sampler
from growsearch.search.task_prior import choose_source

PAPER = (
    "Veniat, Denoyer & Ranzato 2021, Efficient Continual Learning with Modular Networks and "
    "Task-Driven Priors"
)


@dataclass(frozen=True)
class MNTDPOptions:
    source: Literal["prior", "previous"] = "prior"  # the paper's task-driven prior, or the previous task


class _MNTDP(Method):
    scenarios = ("task-il",)

    def _depths(self, ctx: TaskContext) -> list[int]:
        return [0] if ctx.task_id == 0 else list(range(len(ctx.specs) + 1))

    def source(self, ctx: TaskContext, trial: optuna.Trial | None = None) -> int | None:
        """The earlier task whose path is perturbed (the same for every trial of a task)."""
        if ctx.task_id == 0:
            return None
        if self.options.source == "previous":
            return ctx.task_id - 1
        cache = self.__dict__.setdefault("_prior", {})
        if ctx.task_id not in cache:
            cache[ctx.task_id] = choose_source(ctx.committed, ctx.task, list(range(ctx.task_id)), ctx.seed)
        choice = cache[ctx.task_id]
        if trial is not None:
            trial.set_user_attr("prior_scores", {str(j): s for j, s in choice.scores.items()})
        return choice.source


@register_method
class MNTDPD(_MNTDP):
    name = "mntdp-d"
    paper = PAPER
    Options = MNTDPOptions

    def trial_budget(self, ctx: TaskContext) -> int:
        return self.space.search.n_trials or len(self._depths(ctx))

    def sampler(self, ctx: TaskContext) -> optuna.samplers.BaseSampler:
        name = self.space.search.sampler or "grid"
        # "grid" trains every candidate: they are enqueued in order by initial_trials, so the sampler
        # only serves extra trials beyond the grid (there are none with the default budget).
        return make_sampler("random" if name == "grid" else name, seed=ctx.seed)

    def initial_trials(self, ctx: TaskContext) -> list[dict[str, Any]]:
        if (self.space.search.sampler or "grid") != "grid":
            return []
        return [{"reuse_depth": k} for k in self._depths(ctx)]

    def suggest(self, trial: optuna.Trial, ctx: TaskContext) -> None:
        trial.suggest_categorical("reuse_depth", self._depths(ctx))

    def candidate(self, trial: optuna.Trial, ctx: TaskContext) -> ModuleGraph:
        k = trial.suggest_categorical("reuse_depth", self._depths(ctx))
        source = self.source(ctx, trial)
        trial.set_user_attr("source_task", source)
        return ops.reuse_prefix(ctx.committed, ctx.task_id, source, int(k), ctx.specs, ctx.n_outputs)

    def decisions(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {
            "reuse_depth": trial.params["reuse_depth"],
            "source_task": trial.user_attrs.get("source_task"),
        }


@dataclass(frozen=True)
class MNTDPSOptions:
    source: Literal["prior", "previous"] = "prior"
    sampler_epochs: int = 2  # epochs of joint training under the path distribution
    path_lr: float = 0.1  # step size of the distribution's logits

    def validate(self, where: str) -> None:
        require(self.sampler_epochs >= 1, f"{where}.sampler_epochs", "expected an integer >= 1")
        require(self.path_lr > 0, f"{where}.path_lr", "expected a number > 0")


@register_method
class MNTDPS(_MNTDP):
    name = "mntdp-s"
    paper = PAPER
    Options = MNTDPSOptions

    def suggest(self, trial: optuna.Trial, ctx: TaskContext) -> None:
        """MNTDP-S has no decision to sample up front: its distribution is learned inside the trial."""

    def candidate(self, trial: optuna.Trial, ctx: TaskContext) -> ModuleGraph:
        source = self.source(ctx, trial)
        depths = self._depths(ctx)
        graphs = [
            ops.reuse_prefix(ctx.committed, ctx.task_id, source, k, ctx.specs, ctx.n_outputs) for k in depths
        ]
        probabilities, macs = self._train_jointly(graphs, ctx)
        best = max(range(len(depths)), key=lambda i: (probabilities[i], -i))
        trial.set_user_attr("source_task", source)
        trial.set_user_attr("reuse_depth", depths[best])
        trial.set_user_attr(
            "path_probabilities", {str(k): p for k, p in zip(depths, probabilities, strict=True)}
        )
        trial.set_user_attr("search_macs", macs)
        return graphs[best]

    def _train_jointly(self, graphs: list[ModuleGraph], ctx: TaskContext) -> tuple[list[float], int]:
        task, config = ctx.task, self.space.training
        compiled = [compile_view(g, ctx.task_id, include_free=True, train=True) for g in graphs]
        optimizers = [
            torch.optim.SGD(
                [p for p in c.module.parameters() if p.requires_grad], lr=config.lr, momentum=config.momentum
            )
            for c in compiled
        ]
        logits = torch.zeros(len(graphs))
        baseline, loss_fn = None, nn.CrossEntropyLoss()
        generator = torch.Generator().manual_seed(ctx.seed)
        view_macs = [g.macs(g.view(ctx.task_id)) for g in graphs]
        macs = 0
        for _ in range(self.options.sampler_epochs):
            order = torch.randperm(len(task.train), generator=generator)
            for start in range(0, len(order), config.batch_size):
                index = order[start : start + config.batch_size]
                probs = torch.softmax(logits, 0)
                i = int(torch.multinomial(probs, 1, generator=generator))
                loss = loss_fn(compiled[i].module(task.train.x[index]), task.train.y[index])
                if not math.isfinite(loss.item()):
                    break
                optimizers[i].zero_grad()
                loss.backward()
                optimizers[i].step()
                reward = -loss.item()
                baseline = reward if baseline is None else 0.9 * baseline + 0.1 * reward
                grad = -probs  # d log p_i / d logits = onehot(i) - probs
                grad[i] += 1.0
                logits += self.options.path_lr * (reward - baseline) * grad
                macs += 3 * view_macs[i] * len(index)
        for graph, view in zip(graphs, compiled, strict=True):
            write_back(graph, view)
        return torch.softmax(logits, 0).tolist(), macs

    def decisions(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        keys = ("reuse_depth", "source_task", "path_probabilities")
        return {key: trial.user_attrs.get(key) for key in keys}
