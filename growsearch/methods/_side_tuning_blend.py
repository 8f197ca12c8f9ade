"""Side-Tuning's node kind and growth (Zhang, Sax, Zamir, Guibas & Malik, ECCV 2020, sec. 3): a `Blend` node,
`alpha B(x) + (1 - alpha) S(x)` of a frozen base network's features and a side network's, and the operator
that grows a task's side network, its blend and its head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from growsearch.methods.toolkit import (
    INPUT,
    GraphError,
    ModuleGraph,
    NodeSpec,
    Shape,
    node_kind,
    ops,
    task_node,
)


class _AlphaBlend(nn.Module):
    """alpha * B + (1 - alpha) * S of a stacked input (batch, 2, ...): the base's features first, the side
    network's second. Learned: alpha = sigmoid(logit), the logit a parameter (the authors' `Alpha` merge);
    scheduled: alpha a buffer that a training hook sets step by step. Either way the value is in the state
    dict, so a frozen task's alpha is stored with the graph."""

    def __init__(self, learned: bool):
        super().__init__()
        self.learned = learned
        if learned:
            self.logit = nn.Parameter(torch.zeros(()))  # sigmoid(0) = 0.5, the authors' start
        else:
            self.register_buffer("alpha", torch.ones(()))  # a curriculum starts from the base alone

    def value(self) -> torch.Tensor:
        return torch.sigmoid(self.logit) if self.learned else self.alpha

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        alpha = self.value()
        return alpha * stacked[:, 0] + (1 - alpha) * stacked[:, 1]


@node_kind
@dataclass(frozen=True)
class Blend(NodeSpec):
    """The blend `alpha B(x) + (1 - alpha) S(x)` of a frozen base network's features B(x) and a side
    network's S(x), stacked in that order (`merge="stack"`). `learned`: alpha = sigmoid(logit) trains with
    the side network (weights `logit`); else alpha follows a curriculum set from outside (weights `alpha`, a
    buffer the trainer never steps)."""

    kind: ClassVar[str] = "Blend"
    learned: bool = True

    def build(self) -> nn.Module:
        return _AlphaBlend(self.learned)

    def start(self, alpha: float) -> dict[str, torch.Tensor]:
        """The node's weights for a blend that starts at `alpha` (learned: its logit; 0 < alpha < 1)."""
        if not self.learned:
            return {"alpha": torch.tensor(float(alpha))}
        if not 0 < alpha < 1:
            raise GraphError(f"a learned blend's alpha is sigmoid(logit), inside (0, 1); got {alpha}")
        return {"logit": torch.logit(torch.tensor(float(alpha)))}

    def alpha(self, weights: dict[str, torch.Tensor]) -> float:
        """The alpha that weights `weights` (a node of this spec's) blend with."""
        return float(torch.sigmoid(weights["logit"]) if self.learned else weights["alpha"])

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 2 or input_shape[0] != 2:
            raise GraphError(f"Blend expects 2 stacked inputs (base, side), got shape {input_shape}")
        return input_shape[1:]

    def macs(self, input_shape: Shape) -> int:
        return math.prod(input_shape)  # one multiply-add per feature of each input


def side_id(task: int, layer: int) -> str:
    """The node of layer `layer` of task `task`'s side network."""
    return task_node(task, f"side{layer}")


def blend_id(task: int) -> str:
    """Task `task`'s blend node."""
    return task_node(task, "blend")


def add_side_network(
    graph: ModuleGraph,
    task: int,
    base_output: str,
    specs: Sequence[NodeSpec],
    n_outputs: int,
    blend: Blend,
    blend_weights: dict[str, torch.Tensor],
) -> ModuleGraph:
    """A side network of `specs` for `task` reading the input (`side_id`), a blend node over the frozen
    `base_output` and the side's last layer, stacked in that order (`blend_id`, starting from
    `blend_weights`), and the task's head on the blend."""
    grown, previous = graph.copy(), INPUT
    for layer, spec in enumerate(specs):
        grown.add(side_id(task, layer), spec, [previous], task, layer=layer)
        previous = side_id(task, layer)
    grown.add(blend_id(task), blend, [base_output, previous], task, merge="stack", weights=blend_weights)
    return ops.add_head(grown, task, blend_id(task), n_outputs)
