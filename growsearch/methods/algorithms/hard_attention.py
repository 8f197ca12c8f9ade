"""HAT's hard attention (Serra et al., ICML 2018, eqs. 4-5): a gate per unit (conv: channel), sigmoid(s e),
with s annealed within every epoch from 1/s_max to s_max and the embedding's gradient compensated for the
annealing; binary (e > 0) when evaluated. HAT gates units per task; DER (Yan et al. 2021) masks the
channels of each new feature extractor the same way to prune it; DGMw (Ostapenko et al. 2019) masks each
weight of its generator per task."""

from __future__ import annotations

import torch
from torch import nn


class Annealing:
    """The current s, set before every step from the step's position in its epoch."""

    def __init__(self, s_max: float, batches_per_epoch: int):
        self.s_max, self.batches = s_max, max(1, batches_per_epoch)
        self.s = s_max  # evaluation (not used: gates are binary there)

    def before_step(self, step: int) -> None:
        b = (step - 1) % self.batches  # 0-based batch index in its epoch: eq. 4's (b - 1)
        fraction = b / (self.batches - 1) if self.batches > 1 else 1.0
        self.s = 1 / self.s_max + (self.s_max - 1 / self.s_max) * fraction


class UnitAttention(nn.Module):
    """A unit's gate being learnt: sigmoid(s e) while training, e > 0 (binary) when evaluated."""

    def __init__(self, units: int, annealing: Annealing, cosh_clamp: float):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(units))  # N(0, 1), as nn.Embedding's default
        self.annealing = annealing
        self.embedding.register_hook(self._compensate)
        self.cosh_clamp = cosh_clamp

    def _compensate(self, grad: torch.Tensor) -> torch.Tensor:
        s, s_max, e = self.annealing.s, self.annealing.s_max, self.embedding.detach()
        numerator = torch.cosh(torch.clamp(s * e, -self.cosh_clamp, self.cosh_clamp)) + 1
        return grad * (s_max / s) * numerator / (torch.cosh(e) + 1)

    def soft(self) -> torch.Tensor:
        return torch.sigmoid(self.annealing.s * self.embedding)

    def binary(self) -> torch.Tensor:
        return (self.embedding.detach() > 0).to(self.embedding.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.soft() if self.training else self.binary()
        return x * gate.view(1, -1, *([1] * (x.dim() - 2)))
