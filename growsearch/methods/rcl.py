"""RCL: Reinforced Continual Learning (Xu & Zhu, NeurIPS 2018, arXiv:1805.12369).

The first task trains the base network. For every later task an LSTM controller (2 layers x 100 units,
its softmax fed back as the next input) picks, per hidden layer, how many units (filters) to add, 0..29.
The new units read every unit of the layer below (old and new) and feed the task's new head; old units
keep their weights. Each sampled architecture is trained, and the controller is updated by REINFORCE with
a learned value baseline on reward = validation accuracy - 1e-4 x (units added). 50 architectures are
sampled per task; the controller starts afresh for each task (as in the authors' code, which builds a new
`Controller` per task).

Paper details checked against the authors' code (github.com/xujinfan/Reinforced-Continual-Learning):
the complexity term is per unit/filter added (`penalty * sum(actions)`), not per parameter; policy Adam
1e-3, value network (a linear layer on the controller's random input) Adam 5e-3 on the squared error to
the reward; the child MLP 784-312-128-10 trains with Adam 1e-3, batch 32, 15 epochs, L2 1e-4.

Growth here: new units are new parallel nodes (`growsearch.grow.neurons`), so old tasks' outputs are
bit-identical by construction. One difference from the authors' TensorFlow code: there, old units of
layer i + 1 also get trainable task-specific weights from the new units of layer i; here new units feed
only new units and the head. The trial value is validation accuracy (comparable across methods, usable by
pruners); the controller's reward is computed from it and the units added, and, as in the authors' code
(`RCL.py` keeps the architecture with the best reward), the committed candidate is the best-reward one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from growsearch.config.schema import require
from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow import neurons
from growsearch.methods.algorithms.reinforce import ControllerConfig, Decision, ReinforceSampler
from growsearch.methods.base import Candidate, Decisions, Method, TaskContext
from growsearch.seeded_samplers import SeededRandomSampler

ADD = "add_units_L{}"


class ControllerMethod(Method):
    """What RCL and CLEAS share: the base network for the first task, then `search.n_trials` architectures
    per task sampled by a REINFORCE controller (`search.sampler: reinforce`, the default; any Optuna
    sampler name searches the same space instead), reward = accuracy - penalty x units added.

    The trial value stays validation accuracy (comparable across methods, usable by pruners); as in the
    papers, the committed network is the best-reward one (`selection_score`). A failed child (NaN loss,
    an empty layer) counts as accuracy 0 for the controller."""

    default_trials: ClassVar[int]

    def trial_budget(self, ctx: TaskContext) -> int:
        return 1 if ctx.task_id == 0 else self.space.search.n_trials or self.default_trials

    def pack_limit(self, ctx: TaskContext) -> int | None:
        """A tenth of the task's architectures at a time: the controller still learns between packs ten
        times a task (every architecture of a pack is sampled from the same policy)."""
        return max(1, self.trial_budget(ctx) // 10)

    def controller_config(self) -> ControllerConfig:
        raise NotImplementedError

    def search_decisions(self, ctx: TaskContext) -> list[Decision]:
        raise NotImplementedError

    def sampler(self, ctx: TaskContext) -> optuna.samplers.BaseSampler | None:
        name = self.space.search.sampler or "reinforce"
        if ctx.task_id == 0:  # the base network: nothing to sample
            return SeededRandomSampler(seed=ctx.seed)
        if name != "reinforce":
            return None
        decisions = self.search_decisions(ctx)
        return ReinforceSampler(decisions, self.reward, seed=ctx.seed, config=self.controller_config())

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if ctx.task_id == 0:
            return {}
        return {d.name: d.sample(trial) for d in self.search_decisions(ctx)}

    def added_units(self, decisions: Decisions, ctx: TaskContext) -> list[int]:
        return [int(decisions[ADD.format(i)]) for i in range(len(ctx.specs))]

    def penalty_record(self, added: list[int]) -> dict[str, float | int]:
        return {"units_added": sum(added), "complexity_penalty": self.options.penalty * sum(added)}

    def reward(self, trial: FrozenTrial) -> float | None:
        """Validation accuracy minus the penalty on the units added (accuracy 0 when the child failed)."""
        units = _units(trial)
        if trial.state == TrialState.COMPLETE and trial.values:
            return trial.values[0] - self.options.penalty * units  # values[0]: accuracy, in any search
        if trial.state == TrialState.FAIL:
            return -self.options.penalty * units
        return None  # pruned: no final accuracy

    def selection_score(self, trial: FrozenTrial) -> float:
        score = self.reward(trial)
        return trial.values[0] if score is None else score

    def search_record(self, study: optuna.Study, ctx: TaskContext) -> dict[str, Any]:
        """The reward of every sampled architecture and, with the REINFORCE controller, its policy's
        entropy at the end of the task's search against a uniform policy's."""
        if ctx.task_id == 0:
            return {}
        trials = study.get_trials(deepcopy=False)
        rewards = [
            {"trial": t.number, "units_added": _units(t), "reward": self.reward(t)}
            for t in trials
            if self.reward(t) is not None
        ]
        record: dict[str, Any] = {"rewards": rewards}
        if isinstance(study.sampler, ReinforceSampler):
            entropy, uniform = study.sampler.policy_entropy(trials)
            record.update(controller_entropy=entropy, uniform_entropy=uniform)
        return record

    def base_network(self, ctx: TaskContext) -> ModuleGraph:
        added = [neurons.width(spec) for spec in ctx.specs]
        return neurons.grow_units(ctx.committed, ctx.task_id, ctx.specs, added, ctx.n_outputs)


def _units(trial: FrozenTrial) -> int:
    """Units (filters) a trial's architecture adds, over every layer."""
    return sum(v for name, v in trial.params.items() if name.startswith(ADD.format("")))


@dataclass(frozen=True)
class RCLOptions:
    max_units: int = 30  # actions 0..max_units-1 per layer (the authors' `state_space` of 30)
    penalty: float = 1e-4  # reward = val accuracy - penalty x units (filters) added
    controller_hidden: int = 100
    controller_layers: int = 2
    policy_lr: float = 1e-3
    value_lr: float = 5e-3

    def validate(self, where: str) -> None:
        require(self.max_units >= 2, f"{where}.max_units", "expected an integer >= 2")
        require(self.penalty >= 0, f"{where}.penalty", "expected a number >= 0")
        require(self.controller_hidden >= 1, f"{where}.controller_hidden", "expected an integer >= 1")
        require(self.controller_layers >= 1, f"{where}.controller_layers", "expected an integer >= 1")
        require(self.policy_lr > 0 and self.value_lr > 0, f"{where}.policy_lr", "expected rates > 0")


class RCL(ControllerMethod):
    name = "rcl"
    paper = "Xu & Zhu 2018, Reinforced Continual Learning, NeurIPS (arXiv:1805.12369)"
    scenarios = ("task-il",)
    Options = RCLOptions
    default_trials = 50

    def controller_config(self) -> ControllerConfig:
        o = self.options
        return ControllerConfig(
            o.controller_hidden, o.controller_layers, "adam", o.policy_lr, "value", o.value_lr
        )

    def search_decisions(self, ctx: TaskContext) -> list[Decision]:
        return [Decision(ADD.format(i), self.options.max_units) for i in range(len(ctx.specs))]

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        if ctx.task_id == 0:
            return Candidate(self.base_network(ctx))
        added = self.added_units(decisions, ctx)
        graph = neurons.grow_units(ctx.committed, ctx.task_id, ctx.specs, added, ctx.n_outputs)
        return Candidate(graph, {"add_units": added}, self.penalty_record(added))
