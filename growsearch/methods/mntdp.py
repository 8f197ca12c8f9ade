"""MNTDP: Modular Networks with Task-Driven Priors (Veniat, Denoyer & Ranzato, ICLR 2021, "Efficient
Continual Learning with Modular Networks and Task-Driven Priors").

Every layer is a module. For a new task the candidates are local perturbations of a source task's path:
for each k in 0..L, keep the source's (frozen) modules below layer k and train new modules from layer k
up, plus a new head (k = L: only a new head; k = 0: a fresh path). The source is chosen by the
task-driven prior (a kNN on each earlier path's features of the new task, `algorithms.task_prior`) or is
simply the previous task. New modules of the committed path join the frozen library.

- MNTDP-D (`mntdp-d`) trains all L + 1 candidates and keeps the best on validation.
- MNTDP-S (`mntdp-s`) trains the candidates jointly under a softmax distribution over them: each
  minibatch samples one candidate, trains it, and moves the distribution toward low-loss candidates
  (REINFORCE with a running baseline); the most probable candidate is then trained to the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import optuna
import torch
from torch import nn

from growsearch.methods.algorithms.task_prior import PriorChoice, choose_source
from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    Method,
    Minibatches,
    ModuleGraph,
    SearchPlan,
    SeededRandomSampler,
    StepOutcome,
    TaskContext,
    Training,
    compile_view,
    derived_seed,
    fit,
    ops,
    read_record,
    require,
    resolve_device,
    write_back,
)

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

    def prior(self, ctx: TaskContext) -> PriorChoice | None:
        """The earlier task whose path is perturbed (the same for every trial of a task), with the
        prior's kNN scores; None for the first task, or a choice of the previous task without scores."""
        if ctx.task_id == 0:
            return None
        if self.options.source == "previous":
            return PriorChoice(ctx.task_id - 1, {})
        cache = self.__dict__.setdefault("_prior", {})
        if ctx.task_id not in cache:
            cache[ctx.task_id] = choose_source(ctx.committed, ctx.task, list(range(ctx.task_id)), ctx.seed)
        return cache[ctx.task_id]

    def _candidate(self, ctx: TaskContext, source: int | None, k: int) -> ModuleGraph:
        return ops.reuse_prefix(ctx.committed, ctx.task_id, source, k, ctx.specs, ctx.n_outputs)


def _prior_record(choice: PriorChoice | None) -> dict[str, Any]:
    return {"prior_scores": {str(j): s for j, s in choice.scores.items()}} if choice and choice.scores else {}


class MNTDPD(_MNTDP):
    name = "mntdp-d"
    paper = PAPER
    Options = MNTDPOptions
    own_samplers = ("grid",)

    def _enumerates(self) -> bool:
        return (self.space.search.sampler or "grid") == "grid"

    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """Every candidate by default: "grid" (the default sampler) enqueues them in order, so its random
        sampler only serves trials beyond them (none with the default budget, one per candidate)."""
        budget = self.space.search.n_trials or len(self._depths(ctx))
        if not self._enumerates():
            return SearchPlan(budget)
        initial = tuple({"reuse_depth": k} for k in self._depths(ctx))
        return SearchPlan(budget, initial, sampler=SeededRandomSampler(seed=ctx.seed))

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        return {"reuse_depth": trial.suggest_categorical("reuse_depth", self._depths(ctx))}

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        choice = self.prior(ctx)
        source = None if choice is None else choice.source
        k = int(decisions["reuse_depth"])
        decided = {"reuse_depth": k, "source_task": source}
        return Candidate(self._candidate(ctx, source, k), decided, _prior_record(choice))

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Every trained candidate: how deep it reuses the source path, its validation accuracy and size."""
        candidates = []
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            record = read_record(trial)
            added = record.added_parameters if record else None
            candidates.append(
                {
                    "trial": trial.number,
                    "reuse_depth": trial.params.get("reuse_depth"),
                    "val_accuracy": trial.values[0],
                    "added_parameters": added,
                }
            )
        return {"candidates": candidates}


@dataclass(frozen=True)
class MNTDPSOptions:
    source: Literal["prior", "previous"] = "prior"
    sampler_epochs: int = 4  # epochs of joint training under the path distribution
    path_lr: float = 2.0  # step size of the distribution's logits

    def validate(self, where: str) -> None:
        require(self.sampler_epochs >= 1, f"{where}.sampler_epochs", "expected an integer >= 1")
        require(self.path_lr > 0, f"{where}.path_lr", "expected a number > 0")


class _Switch(nn.Module):
    """The candidates' compiled views; each step runs the one the path distribution picked."""

    def __init__(self, views: list[nn.Module]):
        super().__init__()
        self.views = nn.ModuleList(views)
        self.active = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.views[self.active](x)


class MNTDPS(_MNTDP):
    name = "mntdp-s"
    paper = PAPER
    Options = MNTDPSOptions

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        """No decision is sampled up front: the path distribution is learned here, on the worker."""
        choice = self.prior(ctx)
        source = None if choice is None else choice.source
        depths = self._depths(ctx)
        graphs = [self._candidate(ctx, source, k) for k in depths]
        probabilities = self._train_jointly(graphs, ctx)
        best = max(range(len(depths)), key=lambda i: (probabilities[i], -i))
        distribution = {str(k): p for k, p in zip(depths, probabilities, strict=True)}
        decided = {"reuse_depth": depths[best], "source_task": source, "path_probabilities": distribution}
        mechanism = {**_prior_record(choice), "path_probabilities": distribution}
        return Candidate(graphs[best], decided, mechanism)

    def _train_jointly(self, graphs: list[ModuleGraph], ctx: TaskContext) -> list[float]:
        """One training run over the candidates: each step trains the candidate sampled from softmax(logits)
        and moves the logits by REINFORCE on the negative loss, with a running-mean baseline."""
        task, config = ctx.task, self.space.training
        device = resolve_device(config.device)
        compiled = [compile_view(g, ctx.task_id, include_free=True, train=True) for g in graphs]
        switch = _Switch([c.module for c in compiled]).to(device)
        view_macs = [g.macs(g.view(ctx.task_id)) for g in graphs]
        logits = torch.zeros(len(graphs))
        pick = torch.Generator().manual_seed(derived_seed(ctx.seed, "mntdp-s paths"))
        baseline: list[float] = []

        def sample(step: int) -> None:
            switch.active = int(torch.multinomial(torch.softmax(logits, 0), 1, generator=pick))

        def learn(outcome: StepOutcome) -> None:
            i, reward = switch.active, -outcome.loss
            baseline[:] = [reward if not baseline else 0.9 * baseline[0] + 0.1 * reward]
            grad = -torch.softmax(logits, 0)  # d log p_i / d logits = onehot(i) - probs
            grad[i] += 1.0
            logits.add_(self.options.path_lr * (reward - baseline[0]) * grad)

        batches = Minibatches([task.train.x.to(device)], task.train.y.to(device), config.batch_size, ctx.seed)
        fit(
            switch,
            batches,
            [p for p in switch.parameters() if p.requires_grad],
            config.optimizer_settings(),
            epochs=self.options.sampler_epochs,
            masked=[m for view in compiled for m in view.masked],
            training=Training(before_step=sample, after_step=learn),
            macs_per_sample=lambda: view_macs[switch.active],
        )
        for graph, view in zip(graphs, compiled, strict=True):
            write_back(graph, view)
        return torch.softmax(logits, 0).tolist()
