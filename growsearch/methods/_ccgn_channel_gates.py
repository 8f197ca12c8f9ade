"""CCGN's task paths over a shared stack (Abati et al., CVPR 2020): per task, one `ConditionalGate` node
per shared layer, wrapping it (`t{task}/gate{i}`, each reading the one before it, the first the input), so a
task computes every shared layer with its own input-conditional gates on the layer's units.

A committed task's gate node holds `allowed`: the units its gates may open, those that were important to
it. The units any earlier task holds this way are frozen in the shared layer (their rows of weights, every
input column, and bias: the paper's frozen kernels); the others are free for later tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.methods.toolkit import (
    INPUT,
    GraphError,
    ModuleGraph,
    NodeSpec,
    Shape,
    dense_or_conv,
    layer_fields,
    node_data,
    node_kind,
    seed_torch,
    task_node,
)


class _InputConditionalGate(nn.Module):
    """The gating module: per sample, a binary gate per output unit of a layer, from the layer's input.

    The input is summarised (a conv input average-pooled to a `grid` x `grid` grid per channel: 1, the
    paper's global average pooling, where the input has enough channels), a one-hidden-layer MLP gives a
    logit pair (off, on) per unit; training samples the gate by Gumbel-softmax with the straight-through
    estimator (hard 0/1 forward, the relaxation's gradient), evaluation takes the larger logit. With
    `batch_norm` the hidden units are batch-normalised before their ReLU (see `normalised`). `allowed` (a
    buffer) closes units for good: every unit is allowed while the task trains."""

    def __init__(self, spec: ConditionalGate):
        super().__init__()
        self.grid = spec.grid
        # the normalisation subtracts the hidden units' mean: a bias before it would cancel out
        self.hidden = nn.Linear(spec.summary_features, spec.hidden, bias=not spec.batch_norm)
        self.norm: nn.ParameterDict | None = None
        if spec.batch_norm:
            self.norm = nn.ParameterDict(
                {
                    "weight": nn.Parameter(torch.ones(spec.hidden)),
                    "bias": nn.Parameter(torch.zeros(spec.hidden)),
                }
            )
            self.register_buffer("running_mean", torch.zeros(spec.hidden))
            self.register_buffer("running_var", torch.ones(spec.hidden))
        self.logits = nn.Linear(spec.hidden, 2 * spec.out_features)
        self.register_buffer("allowed", torch.ones(spec.out_features))
        self.temperature = spec.temperature
        self.last_gates: torch.Tensor | None = None  # the last training batch's gates (a sparsity loss)

    def summary(self, x: torch.Tensor) -> torch.Tensor:
        """What the gating module reads of the layer's input: a conv input pooled per channel on the grid."""
        return F.adaptive_avg_pool2d(x, self.grid).flatten(1) if x.dim() == 4 else x

    def normalised(self, hidden: torch.Tensor) -> torch.Tensor:
        """Batch norm of the hidden units (the reimplementation's): a training batch's statistics while the
        module learns, its running statistics following them, and the running statistics otherwise, so a
        sample's gates at test, and a frozen module's ever after, do not depend on its batch. Without it the
        hidden layer can carry a constant (its bias) to the logits and the gates settle on one mask for every
        input; normalised, a hidden unit differs between samples, and so do the logits it feeds."""
        if self.norm is None:
            return hidden
        learning = self.training and self.hidden.weight.requires_grad and len(hidden) > 1
        return F.batch_norm(
            hidden,
            self.running_mean,
            self.running_var,
            self.norm["weight"],
            self.norm["bias"],
            training=learning,
        )

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.normalised(self.hidden(self.summary(x))))
        pairs = self.logits(hidden).view(len(x), 2, -1)  # (batch, off/on, units)
        if self.training:
            gates = F.gumbel_softmax(pairs, tau=self.temperature, hard=True, dim=1)[:, 1]
        else:
            gates = (pairs[:, 1] > pairs[:, 0]).to(x.dtype)
        return gates * self.allowed

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        gates = self.gates(x)
        if self.training:
            self.last_gates = gates
        return y * gates.view(*gates.shape, *([1] * (y.dim() - 2)))


@node_kind
@dataclass(frozen=True)
class ConditionalGate(NodeSpec):
    """A task's gated version of a shared dense or conv layer (sec. 3.1). The node shares the layer
    (`wraps_shared`): it computes the layer on its input, then multiplies each output unit (conv: channel)
    by a gate its own gating module draws from that input, so the same shared layer gives each task, and
    each sample, its own units. Its weights: the gating module's two dense layers (with `batch_norm`, the
    normalisation's scale, shift and running statistics) and `allowed`. The base layer's fields are repeated
    (kernel_size 0: dense) so the spec stands alone. The defaults of `grid` and `batch_norm` are the gating
    module before they existed (global pooling, no normalisation), so older run folders load as they ran."""

    kind: ClassVar[str] = "ConditionalGate"
    combines_shared: ClassVar[bool] = True
    wraps_shared: ClassVar[bool] = True
    in_features: int = 0  # the base layer's inputs (dense) or input channels (conv)
    out_features: int = 0  # its units or channels: one gate each
    kernel_size: int = 0
    stride: int = 1
    padding: int = 0
    activation: str | None = "relu"
    pool: int = 1
    flatten: bool = False
    summary_features: int = 0  # what the gating module reads: channels x grid cells, or the input's features
    hidden: int = 16
    temperature: float = 2 / 3
    grid: int = 1  # a conv input is average-pooled to grid x grid cells per channel (1: global pooling)
    batch_norm: bool = False  # the gating MLP's hidden units are batch-normalised

    @classmethod
    def over(
        cls,
        base: NodeSpec,
        input_shape: Shape,
        hidden: int = 16,
        temperature: float = 2 / 3,
        min_summary: int = 1,
        batch_norm: bool = False,
    ) -> ConditionalGate:
        """The gated version of layer `base` (reading `input_shape`); a conv input is pooled to the smallest
        grid that gives the gating module at least `min_summary` features (1: global average pooling)."""
        fields = layer_fields(base, "a ConditionalGate gates")
        grid = summary_grid(input_shape, min_summary)
        return cls(
            **fields,
            summary_features=_summary_size(input_shape, grid),
            hidden=hidden,
            temperature=temperature,
            grid=grid,
            batch_norm=batch_norm,
        )

    def base(self) -> NodeSpec:
        """The spec of the layer this node gates."""
        return dense_or_conv(self)

    def can_share(self, other: NodeSpec) -> bool:
        return self.base() == other

    def build(self) -> nn.Module:
        if self.hidden < 1 or self.temperature <= 0 or self.grid < 1:
            raise GraphError(f"a ConditionalGate needs hidden, grid >= 1 and temperature > 0, got {self}")
        return _InputConditionalGate(self)

    def output_shape(self, input_shape: Shape) -> Shape:
        if _summary_size(input_shape, self.grid) != self.summary_features:
            raise GraphError(
                f"ConditionalGate reads {self.summary_features} features ({self.grid}x{self.grid} cells a "
                f"channel), got shape {input_shape}"
            )
        return self.base().output_shape(input_shape)

    def macs(self, input_shape: Shape) -> int:
        gating = self.hidden * (self.summary_features + 2 * self.out_features)
        return self.base().macs(input_shape) + gating


def summary_grid(input_shape: Shape, min_features: int) -> int:
    """The side of the smallest square grid over which pooling a (C, H, W) input per channel gives at least
    `min_features` features (at most the input's own size); 1 for a dense input."""
    if len(input_shape) != 3:
        return 1
    channels, height, width = input_shape
    grid = 1
    while channels * grid * grid < min_features and grid < min(height, width):
        grid += 1
    return grid


def _summary_size(input_shape: Shape, grid: int) -> int:
    return input_shape[0] * grid * grid if len(input_shape) == 3 else input_shape[0]


def path_ids(task: int, n_layers: int) -> list[str]:
    """The node ids of task `task`'s gated path, one per shared layer."""
    return [task_node(task, f"gate{i}") for i in range(n_layers)]


def add_gated_path(
    graph: ModuleGraph,
    task: int,
    shared: Sequence[str],
    hidden: int,
    temperature: float,
    min_summary: int = 1,
    batch_norm: bool = False,
) -> ModuleGraph:
    """Task `task`'s gated path over the shared layers `shared` (a chain from the input), its gating modules
    (`ConditionalGate.over`) freshly initialised (torch's global random stream) with every unit allowed."""
    grown, previous = graph.copy(), INPUT
    for i, (node_id, layer_id) in enumerate(zip(path_ids(task, len(shared)), shared, strict=True)):
        shape = grown.shapes([previous])[previous]
        spec = ConditionalGate.over(
            grown.node(layer_id).spec, shape, hidden, temperature, min_summary, batch_norm
        )
        grown.add(node_id, spec, [previous], task, layer=i, shares=layer_id)
        previous = node_id
    return grown


def allowed_units(graph: ModuleGraph, node_id: str) -> torch.Tensor:
    """The units a gate node's gates may open (bool)."""
    return graph.node(node_id).weights["allowed"] > 0.5


def frozen_units(graph: ModuleGraph, shared: Sequence[str], before: int) -> dict[str, torch.Tensor]:
    """Per shared layer, the units a task before `before` holds (bool): frozen for task `before`."""
    frozen = {}
    for i, layer_id in enumerate(shared):
        units = graph.shapes([layer_id])[layer_id][0]
        held = torch.zeros(units, dtype=torch.bool)
        for task in graph.tasks:
            gate_id = path_ids(task, len(shared))[i]
            if task < before and gate_id in graph:
                held |= allowed_units(graph, gate_id)
        frozen[layer_id] = held
    return frozen


def keep_units(graph: ModuleGraph, task: int, important: Mapping[str, torch.Tensor]) -> ModuleGraph:
    """A copy in which task `task`'s gates may open only the units `important` names per gate node."""
    allowed = {}
    for node_id, units in important.items():
        node = graph.node(node_id)
        if node.owner != task or not isinstance(node.spec, ConditionalGate):
            raise GraphError(f"{node_id!r} is not a gate node of task {task}")
        allowed[node_id] = {"allowed": units.to(node.weights["allowed"].dtype)}
    return node_data.with_weights(graph, allowed)


def reinitialise_units(graph: ModuleGraph, free: Mapping[str, torch.Tensor], seed: int) -> ModuleGraph:
    """A copy in which each shared layer's `free` units (their rows of every weight, and bias) start again
    from a fresh initialisation drawn from `seed` (torch's global stream is left as it was)."""
    weights = {}
    for i, (node_id, units) in enumerate(free.items()):
        node = graph.node(node_id)
        with torch.random.fork_rng(devices=[]):
            seed_torch(seed + i)
            fresh = node.spec.build().state_dict()
        weights[node_id] = {}
        for name, value in node.weights.items():
            rows = units.view(-1, *([1] * (value.dim() - 1))).expand(value.shape)
            weights[node_id][name] = torch.where(rows, fresh[name].to(value.dtype), value)
    return node_data.with_weights(graph, weights)
