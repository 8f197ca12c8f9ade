"""RCL: Reinforced Continual Learning (Xu & Zhu, NeurIPS 2018, arXiv:1805.12369).

The first task trains the base network. For every later task an LSTM policy (the paper's "controller":
2 layers x 100 units, its softmax fed back as the next input) picks, per hidden layer, how many units
(filters) to add, 0..29. The new units read every unit of the layer below (old and new) and feed the
task's new head; old units keep their weights. Each sampled architecture is trained, and the policy is
updated by REINFORCE with a learned value baseline on reward = validation accuracy - 1e-4 x (units
added). 50 architectures are sampled per task; the policy starts afresh for each task (as in the
authors' code, which builds a new `Controller` per task).

Paper details checked against the authors' code (github.com/xujinfan/Reinforced-Continual-Learning):
the complexity term is per unit/filter added (`penalty * sum(actions)`), not per parameter; policy Adam
1e-3, value network (a linear layer on the policy's random input) Adam 5e-3 on the squared error to
the reward; the child MLP 784-312-128-10 trains with Adam 1e-3, batch 32, 15 epochs, L2 1e-4.

Growth here: new units are new parallel nodes (`growsearch.grow.neurons`), so old tasks' outputs are
bit-identical by construction. One difference from the authors' TensorFlow code: there, old units of
layer i + 1 also get trainable task-specific weights from the new units of layer i; here new units feed
only new units and the head. The trial value is validation accuracy (comparable across methods, usable by
pruners); the policy's reward is computed from it and the units added, and, as in the authors' code
(`RCL.py` keeps the architecture with the best reward), the committed candidate is the best-reward one.
"""

from __future__ import annotations

from dataclasses import dataclass

from growsearch.methods.algorithms.reinforce import ADD, Decision, PolicyConfig, PolicySearchMethod
from growsearch.methods.toolkit import Candidate, Decisions, TaskContext, neurons, require, require_size


@dataclass(frozen=True)
class RCLOptions:
    max_units: int = 30  # actions 0..max_units-1 per layer (the authors' `state_space` of 30)
    penalty: float = 1e-4  # reward = val accuracy - penalty x units (filters) added
    controller_hidden: int = 100  # the policy's (the paper's controller's) LSTM
    controller_layers: int = 2
    policy_lr: float = 1e-3
    value_lr: float = 5e-3

    def validate(self, where: str) -> None:
        require_size(self.max_units, f"{where}.max_units", at_least=2, at_most=10_000)
        require(self.penalty >= 0, f"{where}.penalty", "expected a number >= 0")
        require_size(self.controller_hidden, f"{where}.controller_hidden", at_most=10_000)
        require_size(self.controller_layers, f"{where}.controller_layers", at_most=100)
        require(self.policy_lr > 0 and self.value_lr > 0, f"{where}.policy_lr", "expected rates > 0")


class RCL(PolicySearchMethod):
    name = "rcl"
    paper = "Xu & Zhu 2018, Reinforced Continual Learning, NeurIPS (arXiv:1805.12369)"
    scenarios = ("task-il",)
    Options = RCLOptions
    backbones = ("mlp", "conv")
    backbone_note = "its new unit groups widen dense or conv layers"
    default_trials = 50

    def policy_config(self) -> PolicyConfig:
        o = self.options
        return PolicyConfig(
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
