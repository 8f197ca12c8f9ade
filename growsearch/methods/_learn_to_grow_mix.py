"""Learn to Grow's node kind: a `Mix` node, the DARTS mixed operation of its super-network (a softmax-weighted
sum of the candidate operations' outputs, with per-candidate costs for Learn to Grow's cost regulariser).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from growsearch.methods.toolkit import GraphError, NodeSpec, Shape, node_kind


class _MixedSum(nn.Module):
    """softmax(alpha)-weighted sum of a stacked input (batch, n, ...)."""

    def __init__(self, n_inputs: int, costs: tuple[float, ...]):
        super().__init__()
        self.alpha = nn.Parameter(1e-3 * torch.randn(n_inputs))  # near zero: every choice weighs the same
        self.costs = costs  # plain numbers, not state: the node's only weights are alpha

    def probabilities(self) -> torch.Tensor:
        return torch.softmax(self.alpha, 0)

    def expected_cost(self) -> torch.Tensor:
        costs = torch.tensor(self.costs, dtype=self.alpha.dtype, device=self.alpha.device)
        return (self.probabilities() * costs).sum()

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (stacked.dim() - 2)
        return (self.probabilities().view(shape) * stacked).sum(1)


@node_kind
@dataclass(frozen=True)
class Mix(NodeSpec):
    """A DARTS mixed operation (Liu, Simonyan & Yang, ICLR 2019, eq. 2): the node stacks its inputs (the
    candidate operations' outputs, `merge="stack"`) and returns their softmax(alpha)-weighted sum. `alpha`
    is the node's one parameter (the architecture weights); `costs` are the candidates' costs for a cost
    regulariser on the expected cost `sum_c softmax(alpha)_c costs_c` (Learn to Grow)."""

    kind: ClassVar[str] = "Mix"
    n_inputs: int = 2
    costs: tuple[float, ...] = ()

    def build(self) -> nn.Module:
        costs = self.costs or (0.0,) * self.n_inputs
        return _MixedSum(self.n_inputs, tuple(float(c) for c in costs))

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2 or input_shape[0] != self.n_inputs:
            raise GraphError(f"Mix expects {self.n_inputs} stacked inputs, got shape {input_shape}")
        if self.costs and len(self.costs) != self.n_inputs:
            raise GraphError(f"Mix has {self.n_inputs} inputs but {len(self.costs)} costs")
        return input_shape[1:]
