"""Gradual magnitude pruning (Zhu & Gupta 2017): CPG's and PAE's compacting of the weights a task trained.

Over a stage, the sparsity of the task's prunable entries rises along the cubic schedule of the authors'
`SparsePruner._adjust_sparsity`:
    s(step) = s_f + (s_i - s_f) (1 - p)^3,   p = clip((step - begin) / (end - begin), 0, 1),
from the stage's initial s_i to its final s_f over `ramp_epochs` epochs after its first `delay_epochs` (0 for
CPG's and PAE's stages; auto-grow's compact move trains dense first), the rest of the stage fine-tuning at
s_f. Every `every` steps of the ramp (and at its last step) each weight tensor is pruned to
round(s n) of its n prunable entries, smallest magnitude first: a pruned entry is set to zero and leaves the
tensor's trainable entries, so the trainer masks its gradient and restores its zero after every step,
whatever the optimiser does (the reference re-zeroes pruned weights only when it validates, so momentum
moved them in between). Pruned entries only accumulate, across stages too (an already pruned entry sorts
first). They stay FREE: later tasks train them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from growsearch.methods.toolkit import (
    MaskedParameter,
    ModuleGraph,
    StepOutcome,
    Training,
    TrainingProgram,
    TrainingRun,
    node_data,
)

EXPONENT = 3  # `sparsity_func_exponent` in the reference


def cubic_sparsity(step: int, begin: int, end: int, initial: float, final: float) -> float:
    """The target sparsity at `step` of a ramp from `initial` (at `begin`) to `final` (at `end`)."""
    progress = 1.0 if end <= begin else min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** EXPONENT


Entries = dict[tuple[str, str], torch.Tensor]  # (node id, parameter) -> bool tensor


@dataclass
class GradualPruner:
    """One pruning stage over the `prunable` entries of some weight tensors. `pruned` holds what earlier
    stages pruned (zero already) and grows as this stage prunes; `history` records every update as
    (step, target sparsity)."""

    prunable: Entries
    initial: float
    final: float
    ramp_epochs: int
    every: int
    pruned: Entries = field(default_factory=dict)
    delay_epochs: int = 0
    history: list[tuple[int, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key, prunable in self.prunable.items():
            self.pruned[key] = self.pruned.get(key, torch.zeros_like(prunable)).clone()
        self._masked: dict[tuple[str, str], MaskedParameter] = {}
        self._begin, self._end = 0, 1

    def train_masks(self) -> dict[str, dict[str, torch.Tensor]]:
        """What trains of the prunable tensors: their prunable entries not pruned yet."""
        masks: dict[str, dict[str, torch.Tensor]] = {}
        for (node_id, name), prunable in self.prunable.items():
            masks.setdefault(node_id, {})[name] = prunable & ~self.pruned[node_id, name]
        return masks

    def start(self, run: TrainingRun) -> None:
        """Bind to the compiled candidate's prunable parameters; the ramp's length in steps."""
        found = {(m.node_id, m.name): m for m in run.program.full.masked}
        self._masked = {key: found[key] for key in self.prunable}
        self._begin = self.delay_epochs * run.steps_per_epoch
        self._end = self._begin + max(1, self.ramp_epochs * run.steps_per_epoch)

    def after_step(self, outcome: StepOutcome) -> None:
        step, begin = outcome.step, self._begin
        if begin < step <= self._end and ((step - begin) % self.every == 0 or step == self._end):
            target = cubic_sparsity(step, begin, self._end, self.initial, self.final)
            self.prune_to(target)
            self.history.append((step, target))

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Prune every tensor to round(sparsity n) of its n prunable entries, smallest magnitude first."""
        for key, masked in self._masked.items():
            prunable, pruned = self.prunable[key], self.pruned[key]
            wanted = round(sparsity * int(prunable.sum()))
            if wanted <= int(pruned.sum()):
                continue
            device = masked.parameter.device
            score = masked.parameter.detach().abs().cpu()
            score = torch.where(
                pruned, torch.full_like(score, -1.0), score
            )  # pruned first: the set only grows
            score = torch.where(prunable, score, torch.full_like(score, math.inf))
            pruned |= _smallest(score.flatten(), wanted).view(prunable.shape)
            on_device = pruned.to(device)
            masked.trainable.masked_fill_(on_device, False)
            masked.frozen_values.masked_fill_(on_device, 0.0)
            masked.parameter.masked_fill_(on_device, 0.0)

    def finish(self, graph: ModuleGraph, program: TrainingProgram) -> ModuleGraph:
        """The trained graph with the pruned entries zero (`write_back` copies only what still trained)."""
        zeroed: dict[str, dict[str, torch.Tensor]] = {}
        for (node_id, name), pruned in self.pruned.items():
            zeroed.setdefault(node_id, {})[name] = graph.node(node_id).weights[name].masked_fill(pruned, 0.0)
        return node_data.with_weights(graph, zeroed)

    def training(self) -> Training:
        """The stage's training: the unpruned prunable entries train, pruning after steps of the ramp."""
        return Training(
            train_masks=self.train_masks(), start=self.start, after_step=self.after_step, finish=self.finish
        )

    def sparsity(self) -> dict[tuple[str, str], float]:
        """The pruned share of each tensor's prunable entries."""
        return {k: int(self.pruned[k].sum()) / max(1, int(p.sum())) for k, p in self.prunable.items()}


def _smallest(score: torch.Tensor, wanted: int) -> torch.Tensor:
    """The `wanted` smallest entries of a flat tensor, ties to the lower index: what a stable argsort's first
    `wanted` select, found in linear time (a full sort at every pruning update dominated compact trials)."""
    kth = torch.kthvalue(score, wanted).values
    chosen = score < kth
    ties = (score == kth).nonzero().flatten()[: wanted - int(chosen.sum())]
    chosen[ties] = True
    return chosen


def pruned_fraction(prunable: Mapping[tuple[str, str], torch.Tensor], pruned: Entries) -> float:
    """The pruned share of every prunable entry together."""
    total = sum(int(p.sum()) for p in prunable.values())
    return sum(int(pruned[k].sum()) for k in prunable) / max(1, total)
