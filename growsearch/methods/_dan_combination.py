"""DAN's node kind (Rosenfeld & Tsotsos 2018): a `Combination` layer, whose filters are learned linear
combinations of a frozen base layer's filters, W' = A W, with a bias of its own. The node shares the base
node's weights (`combines_shared`: its module is handed them when compiled); its own weights are A and the
bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.methods.toolkit import (
    Activation,
    GraphError,
    NodeSpec,
    Shape,
    dense_or_conv,
    layer_fields,
    node_kind,
)


class _Combined(nn.Module):
    """y = act(pool(op(x, (A W).view(W.shape)) + b)): filters that are linear combinations (A, out x out)
    of a frozen base layer's filters W, with a bias of its own."""

    def __init__(self, spec: Combination):
        super().__init__()
        out = spec.out_features
        self.combination = nn.Parameter(torch.eye(out))  # identity: the base layer's filters to start
        self.bias = nn.Parameter(torch.zeros(out))
        self.spec = spec
        self.activation = Activation(spec.activation).build()  # an unknown activation is refused here
        self.register_buffer("base_weight", None, persistent=False)  # bound when compiled

    def bind_shared(self, weights: dict[str, torch.Tensor]) -> None:
        """Take the base layer's weight matrix (or filter bank): its one tensor of two or more dims."""
        matrices = [v for v in weights.values() if v.dim() >= 2]
        if len(matrices) != 1:
            raise GraphError(f"a Combination needs one weight matrix in the shared node, not {len(matrices)}")
        self.base_weight = matrices[0].detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base_weight
        weight = (self.combination @ base.flatten(1)).view(base.shape)
        spec = self.spec
        if spec.kernel_size == 0:
            y = F.linear(x.flatten(1) if spec.flatten else x, weight, self.bias)
            return self.activation(y)
        y = self.activation(F.conv2d(x, weight, self.bias, spec.stride, spec.padding))
        return F.max_pool2d(y, spec.pool) if spec.pool > 1 else y


@node_kind
@dataclass(frozen=True)
class Combination(NodeSpec):
    """A layer shaped like a frozen dense or conv base layer, whose filters are learned linear combinations
    of the base's filters, W' = A W with A (out x out, identity at start), and a new bias. kernel_size 0:
    a dense layer (`in_features` inputs, flattened first with `flatten`); else a convolution."""

    kind: ClassVar[str] = "Combination"
    combines_shared: ClassVar[bool] = True
    in_features: int = 0  # inputs of a dense layer, input channels of a conv
    out_features: int = 0  # units or channels
    kernel_size: int = 0
    stride: int = 1
    padding: int = 0
    activation: str | None = "relu"
    pool: int = 1
    flatten: bool = False

    @classmethod
    def over(cls, base: NodeSpec) -> Combination:
        """The combination layer over a frozen base layer of spec `base`."""
        return cls(**layer_fields(base, "a Combination recombines"))

    def can_share(self, other: NodeSpec) -> bool:
        try:
            return Combination.over(other) == self
        except GraphError:
            return False

    def build(self) -> nn.Module:
        return _Combined(self)

    def output_shape(self, input_shape: Shape) -> Shape:
        return dense_or_conv(self).output_shape(input_shape)

    def macs(self, input_shape: Shape) -> int:
        # the base's multiply-adds, plus forming A W once per batch (negligible per sample, not counted)
        return dense_or_conv(self).macs(input_shape)
