"""Differentiable search over per-layer choices: a super-network trained DARTS-style.

The super-network is a module graph in which each searched layer ends in a `Mix` node
(`_learn_to_grow_mix.Mix`): `x_l = sum_c softmax(alpha_l)_c op_c(x_{l-1})` over its candidate
operations' outputs (DARTS: Liu, Simonyan & Yang, ICLR 2019, eq. 2). Learn to Grow (Li, Zhou, Wu, Socher &
Xiong, ICML 2019, sec. 3.2) searches its reuse / adapt / new choices this way and adds a cost regulariser on
the architecture weights so that cheap choices win when they fit as well: the architecture loss is
`L_val + beta * sum_l sum_c softmax(alpha_l)_c cost_{l,c}`.

The first-order approximation of DARTS (sec. 2.3, xi = 0) alternates one step of the architecture weights
on a validation batch and one step of the operations' weights on a training batch: the one trainer's
extra `Phase` before each weight step. The searched structure is the argmax choice of every layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growsearch.methods.toolkit import (
    Minibatches,
    ModuleGraph,
    OptimizerSettings,
    Phase,
    Split,
    Training,
    TrainingConfig,
    compile_view,
    fit,
    resolve_device,
    write_back,
)


@dataclass(frozen=True)
class DartsConfig:
    epochs: int
    cost_weight: float  # beta
    arch_lr: float = 3e-4  # DARTS: Adam, lr 3e-4, betas (0.5, 0.999), weight decay 1e-3
    arch_weight_decay: float = 1e-3

    def arch_optimizer(self) -> OptimizerSettings:
        return OptimizerSettings(
            "adam", self.arch_lr, weight_decay=self.arch_weight_decay, betas=(0.5, 0.999)
        )


@dataclass(frozen=True)
class MixedLayer:
    """A searched layer: its Mix node and the name of each of its inputs (the choices)."""

    node_id: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class SearchOutcome:
    choices: list[str]  # the argmax choice of every layer
    probabilities: list[dict[str, float]]  # softmax(alpha) per layer at the end


def darts_search(
    graph: ModuleGraph,
    task: int,
    layers: list[MixedLayer],
    train: Split,
    val: Split,
    darts: DartsConfig,
    training: TrainingConfig,
    *,
    seed: int,
) -> SearchOutcome:
    """Train the super-network `graph` (task `task`'s view; changed in place: its trained weights and
    architecture weights are written back) for `darts.epochs` epochs over `train`."""
    device = resolve_device(training.device)
    compiled = compile_view(graph, task, include_free=True, train=True)
    compiled.module.to(device)
    mixes = [compiled.node_modules[layer.node_id] for layer in layers]
    alphas = {id(mix.alpha) for mix in mixes}
    weights = [p for p in compiled.module.parameters() if p.requires_grad and id(p) not in alphas]
    forward_macs = graph.macs(graph.view(task))
    phases: tuple[Phase, ...] = ()
    if len(val):

        def cost() -> torch.Tensor:
            return darts.cost_weight * sum(mix.expected_cost() for mix in mixes)

        val_batches = Minibatches([val.x.to(device)], val.y.to(device), training.batch_size, seed + 1)
        arch = Phase([mix.alpha for mix in mixes], darts.arch_optimizer(), val_batches, cost, forward_macs)
        phases = (arch,)
    fit(
        compiled.module,
        Minibatches([train.x.to(device)], train.y.to(device), training.batch_size, seed),
        weights,
        training.optimizer_settings(),
        epochs=darts.epochs,
        masked=compiled.masked,
        training=Training(phases=phases),
        macs_per_sample=forward_macs,
    )
    write_back(graph, compiled)
    probabilities = []
    for layer, mix in zip(layers, mixes, strict=True):
        probabilities.append(dict(zip(layer.choices, mix.probabilities().tolist(), strict=True)))
    choices = [max(p, key=p.get) for p in probabilities]
    return SearchOutcome(choices, probabilities)
