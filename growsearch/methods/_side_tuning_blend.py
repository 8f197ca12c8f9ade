"""Side-Tuning's node kind and growth (Zhang, Sax, Zamir, Guibas & Malik, ECCV 2020, sec. 3): a `Blend` node,
`alpha B(x) + (1 - alpha) S(x)` of a frozen base network's features and a side network's, the operator
that grows a task's side network, its blend and its head, and the probe that measures a committed task with
its alpha forced (the base alone, the side alone).
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
    Split,
    accuracy,
    compile_view,
    node_kind,
    ops,
    task_node,
)


class _AlphaBlend(nn.Module):
    """alpha * B + (1 - alpha) * S of a stacked input (batch, 2, ...): the base's features first, the side
    network's second. Learned: alpha = sigmoid(logit_scale * logit), `logit` a parameter (the authors'
    `Alpha` merge at logit_scale 1); scheduled: alpha a buffer that a training hook sets step by step.
    Either way the value is in the state dict, so a frozen task's alpha is stored with the graph. `forced`
    (not stored) replaces alpha while a probe measures the base alone (1) or the side alone (0)."""

    def __init__(self, learned: bool, logit_scale: float = 1.0):
        super().__init__()
        self.learned, self.logit_scale = learned, logit_scale
        self.forced: float | None = None
        if learned:
            self.logit = nn.Parameter(torch.zeros(()))  # sigmoid(0) = 0.5, the authors' start
        else:
            self.register_buffer("alpha", torch.ones(()))  # a curriculum starts from the base alone

    def value(self) -> torch.Tensor | float:
        if self.forced is not None:
            return self.forced
        return torch.sigmoid(self.logit_scale * self.logit) if self.learned else self.alpha

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        alpha = self.value()
        return alpha * stacked[:, 0] + (1 - alpha) * stacked[:, 1]


@node_kind
@dataclass(frozen=True)
class Blend(NodeSpec):
    """The blend `alpha B(x) + (1 - alpha) S(x)` of a frozen base network's features B(x) and a side
    network's S(x), stacked in that order (`merge="stack"`). `learned`: alpha = sigmoid(logit_scale *
    logit) trains with the side network (weights `logit`); else alpha follows a curriculum set from outside
    (weights `alpha`, a buffer the trainer never steps).

    `logit_scale` is alpha's own learning rate without a second optimiser: Adam's step on a parameter does
    not depend on its gradient's scale, so each step moves alpha's logit `logit_scale` times as far as at
    scale 1 (under SGD, `logit_scale` squared). Graphs saved before the field existed load at 1."""

    kind: ClassVar[str] = "Blend"
    learned: bool = True
    logit_scale: float = 1.0

    def build(self) -> nn.Module:
        return _AlphaBlend(self.learned, self.logit_scale)

    def start(self, alpha: float) -> dict[str, torch.Tensor]:
        """The node's weights for a blend that starts at `alpha` (learned: its logit; 0 < alpha < 1)."""
        if not self.learned:
            return {"alpha": torch.tensor(float(alpha))}
        if not 0 < alpha < 1:
            raise GraphError(f"a learned blend's alpha is sigmoid(logit), inside (0, 1); got {alpha}")
        return {"logit": torch.logit(torch.tensor(float(alpha))) / self.logit_scale}

    def alpha(self, weights: dict[str, torch.Tensor]) -> float:
        """The alpha that weights `weights` (a node of this spec's) blend with."""
        if not self.learned:
            return float(weights["alpha"])
        return float(torch.sigmoid(self.logit_scale * weights["logit"]))

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


def alone_and_blended(
    graph: ModuleGraph, task: int, splits: dict[str, Split], device: torch.device
) -> dict[str, dict[str, float]]:
    """Task `task`'s accuracy on each of `splits` through its committed head, with its blend's alpha forced
    to 1 (`base_alone`: the base's features only), to 0 (`side_alone`) and as committed (`blend`). The
    probe forces alpha in a compiled copy: `graph` is unchanged."""
    view = compile_view(graph, task)
    module, blend = view.module.to(device).eval(), view.node_modules[blend_id(task)]
    measured: dict[str, dict[str, float]] = {}
    for name, forced in (("base_alone", 1.0), ("side_alone", 0.0), ("blend", None)):
        blend.forced = forced
        measured[name] = {
            split: accuracy(module, [data.x.to(device)], data.y.to(device)) for split, data in splits.items()
        }
    return measured
