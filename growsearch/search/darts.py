"""Differentiable search over per-layer choices: a super-network trained DARTS-style.

Layer l of the super-network outputs the softmax-weighted sum of its candidate operations,
`x_l = sum_c softmax(alpha_l)_c op_c(x_{l-1})` (DARTS: Liu, Simonyan & Yang, ICLR 2019, eq. 2). Learn to
Grow (Li, Zhou, Wu, Socher & Xiong, ICML 2019, sec. 3.2) searches its reuse / adapt / new choices this way
and adds a cost regulariser on the architecture weights so that cheap choices win when they fit as well:
the architecture loss is `L_val + beta * sum_l sum_c softmax(alpha_l)_c cost_{l,c}`.

The first-order approximation of DARTS (sec. 2.3, xi = 0) alternates one step of the architecture weights
on a validation batch and one step of the operations' weights on a training batch. The searched structure
is the argmax choice of every layer; the trained operations can initialise it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from growsearch.data.task import Split
from growsearch.errors import TrainingError
from growsearch.search.training import TrainingConfig


class MixedLayer(nn.Module):
    """One layer of the super-network: named candidate operations mixed by softmax(alpha)."""

    def __init__(self, ops: dict[str, nn.Module], costs: dict[str, float]):
        super().__init__()
        self.names = list(ops)
        self.ops = nn.ModuleList(ops.values())
        self.register_buffer("costs", torch.tensor([float(costs[n]) for n in self.names]))
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(ops)))  # near zero: every choice equally weighted

    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.alpha, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.probabilities()
        return sum(w * op(x) for w, op in zip(weights, self.ops, strict=True))

    def expected_cost(self) -> torch.Tensor:
        return (self.probabilities() * self.costs).sum()

    def choice(self) -> str:
        return self.names[int(self.alpha.detach().argmax())]

    def op(self, name: str) -> nn.Module:
        return self.ops[self.names.index(name)]


class SuperNet(nn.Module):
    """Mixed layers in sequence, then a head."""

    def __init__(self, layers: list[MixedLayer], head: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [layer.alpha for layer in self.layers]

    def weight_parameters(self) -> list[nn.Parameter]:
        alphas = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in alphas]

    def expected_cost(self) -> torch.Tensor:
        return sum(layer.expected_cost() for layer in self.layers)


@dataclass(frozen=True)
class DartsConfig:
    epochs: int
    cost_weight: float  # beta
    arch_lr: float = 3e-4  # DARTS: Adam, lr 3e-4, betas (0.5, 0.999), weight decay 1e-3
    arch_weight_decay: float = 1e-3


@dataclass(frozen=True)
class SearchOutcome:
    choices: list[str]  # the argmax operation of every layer
    probabilities: list[dict[str, float]]  # softmax(alpha) per layer at the end
    train_loss: float  # mean training loss of the last epoch
    macs: (
        int  # multiply-adds spent: forward + backward (3x forward) of every sample through the super-network
    )


def _weight_optimizer(parameters: list[nn.Parameter], config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def darts_search(
    net: SuperNet,
    train: Split,
    val: Split,
    darts: DartsConfig,
    training: TrainingConfig,
    *,
    seed: int,
    forward_macs: int,
) -> SearchOutcome:
    """Alternate architecture steps (validation batch, cost regulariser) and weight steps (training batch)
    for `darts.epochs` epochs over `train`; `net` is trained in place. `forward_macs` is one sample's
    forward pass through every operation of the super-network."""
    device = training.torch_device()
    net.to(device)
    weight_opt = _weight_optimizer(net.weight_parameters(), training)
    arch_opt = torch.optim.Adam(
        net.arch_parameters(), lr=darts.arch_lr, betas=(0.5, 0.999), weight_decay=darts.arch_weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = train.x.to(device), train.y.to(device)
    x_val, y_val = val.x.to(device), val.y.to(device)
    n, batch = len(train), training.batch_size
    mean_loss, samples = float("nan"), 0
    for epoch in range(darts.epochs):
        net.train()
        order = torch.randperm(n, generator=generator).to(device)
        val_order = torch.randperm(len(val), generator=generator).to(device)
        total = 0.0
        for step, start in enumerate(range(0, n, batch)):
            if len(val):
                v = val_order[(step * batch) % len(val) :][:batch]
                arch_loss = loss_fn(net(x_val[v]), y_val[v]) + darts.cost_weight * net.expected_cost()
                arch_opt.zero_grad(set_to_none=True)
                arch_loss.backward()
                arch_opt.step()
                samples += len(v)
            index = order[start : start + batch]
            loss = loss_fn(net(x_train[index]), y_train[index])
            if not math.isfinite(loss.item()):
                raise TrainingError(
                    f"the super-network's training loss became {loss.item()} at epoch {epoch + 1}; "
                    "expected a finite loss (try a lower training.lr)"
                )
            weight_opt.zero_grad(set_to_none=True)
            loss.backward()
            weight_opt.step()
            total += loss.item() * len(index)
            samples += len(index)
        mean_loss = total / max(n, 1)
    net.eval()
    return SearchOutcome(
        choices=[layer.choice() for layer in net.layers],
        probabilities=[
            dict(zip(layer.names, layer.probabilities().tolist(), strict=True)) for layer in net.layers
        ],
        train_loss=mean_loss,
        macs=3 * forward_macs * samples,
    )
