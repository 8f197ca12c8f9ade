"""CLEAS: Continual Learning with Efficient Architecture Search (Gao, Luo & Klabjan 2020, arXiv:2006.04027;
IEEE TNNLS 2022).

The first task trains the base network. For every later task a neuron-level policy (an LSTM: the paper's
"controller") decides, for each old neuron, whether the task reuses it (its weights stay frozen) or drops
it, and for each layer how many new neurons to add (0..30). Each sampled architecture is trained (only the
new neurons and the new head learn) and the policy is updated by REINFORCE on reward = validation
accuracy - alpha x new neurons, with a moving-average baseline; 200 architectures per task, the policy
re-initialised for each task. Old tasks never change: reused neurons compute exactly what they computed
before.

Settings from the authors' code (github.com/gcooq/CLEAS, CLEAS_perm_v1.py, CLEAS_MLP.py): 200 episodes,
alpha = 1e-4 per new neuron, at most 30 new neurons per layer, base MLP 784-312-128-10, children trained
with Adam 1e-3, batch 100, L2 1e-4 for 2000 steps (~3.6 epochs of the 55k MNIST training images); the
policy is a one-layer LSTM of 32 units trained with RMSProp at 0.01, its input a neuron's state with a
one-hot of its layer. Differences: the policy here samples its actions (the code thresholds them at
0.5), reads its previous softmax rather than the previous episode's actions, picks the number of new
neurons as one categorical per layer (the code decides each of 30 candidate slots) and its baseline is
a recency-weighted mean of the earlier rewards (the code's `ema`). A reused neuron keeps reading the
neurons it was trained on, so dropping a neuron only removes it from the new neurons' and the new
head's inputs. The reuse decisions of up to 32 neurons are packed into one integer Optuna param
(`reuse_L{layer}_{chunk}`, bit j = neuron 32 x chunk + j, 1 = reuse) so a trial stores a few params, not
one per neuron.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growsearch.methods.algorithms.reinforce import ADD, Decision, PolicyConfig, PolicySearchMethod
from growsearch.methods.toolkit import (
    Candidate,
    Decisions,
    ModuleGraph,
    Retrain,
    TaskContext,
    TrainingError,
    neurons,
    ops,
    require,
    require_size,
)

REUSE = "reuse_L{}_{}"
CHUNK = 32  # reuse bits per Optuna param


@dataclass(frozen=True)
class CLEASOptions:
    max_new_units: int = 30  # new neurons per layer: 0..max_new_units (`up_num` in the authors' code)
    penalty: float = 1e-4  # alpha: reward = val accuracy - alpha x new neurons
    controller_hidden: int = 32  # the policy's (the paper's controller's) LSTM
    controller_layers: int = 1
    policy_lr: float = 0.01  # RMSProp

    def validate(self, where: str) -> None:
        require_size(self.max_new_units, f"{where}.max_new_units", at_most=10_000)
        require(self.penalty >= 0, f"{where}.penalty", "expected a number >= 0")
        require_size(self.controller_hidden, f"{where}.controller_hidden", at_most=10_000)
        require_size(self.controller_layers, f"{where}.controller_layers", at_most=100)
        require(self.policy_lr > 0, f"{where}.policy_lr", "expected a number > 0")


class CLEAS(PolicySearchMethod):
    name = "cleas"
    paper = "Gao, Luo & Klabjan 2020, Efficient Architecture Search for Continual Learning (arXiv:2006.04027)"
    scenarios = ("task-il",)
    Options = CLEASOptions
    backbones = ("mlp", "conv")
    backbone_note = "its neuron groups widen dense or conv layers"
    default_trials = 200

    def policy_config(self) -> PolicyConfig:
        o = self.options
        return PolicyConfig(
            o.controller_hidden, o.controller_layers, "rmsprop", o.policy_lr, "moving-average"
        )

    def _old_groups(self, ctx: TaskContext) -> list[list[str]]:
        return [neurons.layer_groups(ctx.committed, i, ctx.task_id) for i in range(len(ctx.specs))]

    def _reuse_decisions(self, ctx: TaskContext, layer: int, groups: list[str]) -> list[Decision]:
        """The reuse bits of layer `layer`'s old neurons (in the order of its old groups), CHUNK a param."""
        n_old = sum(neurons.width(ctx.committed.node(g).spec) for g in groups)
        return [
            Decision(REUSE.format(layer, c // CHUNK), 2, min(CHUNK, n_old - c), kind=2 * layer)
            for c in range(0, n_old, CHUNK)
        ]

    def search_decisions(self, ctx: TaskContext) -> list[Decision]:
        """Per layer: the reuse bits of its old neurons (in chunks), then how many neurons to add."""
        decisions = []
        for i, groups in enumerate(self._old_groups(ctx)):
            decisions += self._reuse_decisions(ctx, i, groups)
            decisions.append(Decision(ADD.format(i), self.options.max_new_units + 1, kind=2 * i + 1))
        return decisions

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        if ctx.task_id == 0:
            return Candidate(self.base_network(ctx))
        reuse_bits, keep = self._reuse(decisions, ctx)
        added = self.added_units(decisions, ctx)
        reused = [sum(int(keep[g].sum()) for g in groups) for groups in self._old_groups(ctx)]
        empty = [i for i, (a, r) in enumerate(zip(added, reused, strict=True)) if a + r == 0]
        if empty:
            raise TrainingError(f"the sampled architecture has no neuron at layers {empty}")
        graph = neurons.grow_units(ctx.committed, ctx.task_id, ctx.specs, added, ctx.n_outputs, keep)
        decided = {"add_units": added, "reused_units": reused, "reuse": reuse_bits}
        return Candidate(graph, decided, self.penalty_record(added))

    def _reuse(
        self, decisions: Decisions, ctx: TaskContext
    ) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
        """Per layer, the reuse bit of every old neuron (as a string, "1" = reused); per old group, the mask
        of the neurons the task reuses."""
        bits_per_layer: dict[str, str] = {}
        keep: dict[str, torch.Tensor] = {}
        for i, groups in enumerate(self._old_groups(ctx)):
            bits = [b for d in self._reuse_decisions(ctx, i, groups) for b in d.unpack(decisions[d.name])]
            bits_per_layer[f"L{i}"] = "".join(map(str, bits))
            mask = torch.tensor(bits, dtype=torch.bool)
            sizes = [neurons.width(ctx.committed.node(g).spec) for g in groups]
            keep.update(zip(groups, mask.split(sizes), strict=True))
        return bits_per_layer, keep

    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """The task's weights from dropped neurons (held at zero) and the trained ones all become its own;
        then its new nodes are frozen."""
        own = [n for n, node in chosen.nodes() if node.owner == ctx.task_id]
        return ops.freeze(ops.claim_free(chosen, ctx.task_id, own), own)
