"""MNTDP-D: Modular Networks with Task-Driven Priors, deterministic variant (Veniat, Denoyer & Ranzato,
ICLR 2021, "Efficient Continual Learning with Modular Networks and Task-Driven Priors").

Every layer is a module. For a new task the candidates are local perturbations of a source task's path:
for each k in 0..L, keep the source's (frozen) modules below layer k and train new modules from layer k
up, plus a new head (k = L: only a new head; k = 0: a fresh path). MNTDP-D trains all L + 1 candidates and
keeps the best on validation; its new modules join the frozen library. The source is the previous task's
path (the task-driven prior that picks the most similar earlier task is a separate strategy). Task-IL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow import operators as ops
from growsearch.methods import register_method
from growsearch.methods.base import Method, TaskContext
from growsearch.search.samplers import make_sampler


@dataclass(frozen=True)
class MNTDPOptions:
    source: str = "previous"  # which earlier task's path is perturbed

    def validate(self, where: str) -> None:
        from growsearch.config_schema import require

        require(self.source == "previous", f"{where}.source", f"expected 'previous', got {self.source!r}")


@register_method
class MNTDPD(Method):
    name = "mntdp-d"
    paper = (
        "Veniat, Denoyer & Ranzato 2021, Efficient Continual Learning with Modular Networks and "
        "Task-Driven Priors"
    )
    scenarios = ("task-il",)
    Options = MNTDPOptions

    def _depths(self, ctx: TaskContext) -> list[int]:
        return [0] if ctx.task_id == 0 else list(range(len(ctx.specs) + 1))

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

    def candidate(self, trial: optuna.Trial, ctx: TaskContext) -> ModuleGraph:
        k = trial.suggest_categorical("reuse_depth", self._depths(ctx))
        source = ctx.task_id - 1 if ctx.task_id > 0 else None
        trial.set_user_attr("source_task", source)
        return ops.reuse_prefix(ctx.committed, ctx.task_id, source, int(k), ctx.specs, ctx.n_outputs)

    def decisions(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
        return {
            "reuse_depth": trial.params["reuse_depth"],
            "source_task": trial.user_attrs.get("source_task"),
        }
