"""Declarative node specs: what a module is, as plain data.

A spec knows how to build its `torch.nn.Module`, the shape it outputs for a given input shape, the
multiply-adds one sample costs, and the entries (shapes and dtypes) of the state dict its module has. Specs
serialise to small dicts (`{"kind": "Linear", ...}`) so a graph is readable JSON. The general kinds are
here, their modules in `graph.modules`: this module imports no torch, so reading and describing a graph
needs none. A kind that serves one method is a frozen dataclass beside that method, registered with
`@node_kind` like these. A graph naming a kind not registered yet asks the kind finders (`add_kind_finder`:
the method registry imports the module that defines it) before refusing it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from growsearch.errors import GraphError, UnknownNameError
from growsearch.graph.kind_finders import KIND_FINDERS

if TYPE_CHECKING:
    from torch import nn

Shape = tuple[int, ...]  # per-sample shape, without the batch dimension: (F,), (C, H, W) or a (T, F) sequence
# a module's state-dict entries: name -> (shape, dtype name as torch and numpy spell it: "float32")
StateLayout = dict[str, tuple[Shape, str]]

NODE_KINDS: dict[str, type[NodeSpec]] = {}

ACTIVATIONS = ("relu", "tanh", "sigmoid")  # graph.modules.ACTIVATION_MODULES builds them
FLOAT, COUNT = "float32", "int64"  # a module's parameters and statistics; batch norm's batch counter


def feature_axis(shape: Shape) -> int:
    """The per-sample axis a concat merge joins: the last of a (T, F) sequence (its features at every
    step), the first of a dense (F,) or conv (C, H, W) output."""
    return 1 if len(shape) == 2 else 0


def node_kind(cls: type[NodeSpec]) -> type[NodeSpec]:
    NODE_KINDS[cls.kind] = cls
    return cls


def node_kind_class(kind: str) -> type[NodeSpec]:
    """The spec class of node kind `kind`, found through the kind finders (`graph.kind_finders`) when not
    registered yet."""
    if kind not in NODE_KINDS:
        for finder in KIND_FINDERS:
            finder(kind)
    if kind not in NODE_KINDS:
        raise UnknownNameError("node kind", kind, list(NODE_KINDS))
    return NODE_KINDS[kind]


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


@functools.lru_cache(maxsize=256)
def norm_entries(spec: NodeSpec) -> frozenset[str]:
    """The state-dict entries of a spec's normalisation (affine parameters and running statistics): what a
    task keeps a set of its own of (`Node.norms`)."""
    import torch
    from torch import nn

    with torch.device("meta"):
        module = spec.build()
    return frozenset(
        f"{prefix}.{name}" if prefix else name
        for prefix, sub in module.named_modules()
        if isinstance(sub, nn.modules.batchnorm._BatchNorm)
        for name in sub.state_dict()
    )


# ---- the state dicts of the general kinds' modules, without building them (a test checks each kind's
# against its module's)
def _within(layout: StateLayout, prefix: str) -> StateLayout:
    """The entries of a submodule at `prefix` of its parent (an `nn.Sequential` index, an attribute)."""
    return {f"{prefix}.{name}": entry for name, entry in layout.items()}


def _activated(layout: StateLayout, activation: str | None) -> StateLayout:
    """A module followed by its activation (`modules.with_activation`: a Sequential, the module first)."""
    if activation is None:
        return layout
    if activation not in ACTIVATIONS:
        raise UnknownNameError("activation", activation, list(ACTIVATIONS))
    return _within(layout, "0")


def _dense(out_features: int, in_features: int, bias: bool = True) -> StateLayout:
    layout = {"weight": ((out_features, in_features), FLOAT)}
    return {**layout, "bias": ((out_features,), FLOAT)} if bias else layout


def _conv(out_channels: int, in_channels: int, kernel: int, bias: bool = True) -> StateLayout:
    layout = {"weight": ((out_channels, in_channels, kernel, kernel), FLOAT)}
    return {**layout, "bias": ((out_channels,), FLOAT)} if bias else layout


def _batch_norm(channels: int) -> StateLayout:
    stats = {name: ((channels,), FLOAT) for name in ("weight", "bias", "running_mean", "running_var")}
    return {**stats, "num_batches_tracked": ((), COUNT)}


@dataclass(frozen=True)
class NodeSpec:
    """Base of all specs. Subclasses set `kind` and implement the three methods."""

    kind: ClassVar[str] = ""
    # a node of this kind that shares another node's weights also has weights of its own, and its module
    # is handed the shared ones (`bind_shared`) instead of being that node's function (filters recombined
    # from a frozen layer's)
    combines_shared: ClassVar[bool] = False
    # a node of this kind runs the node it shares on its own input, then its own module on (input, that
    # output); the shared node may be trainable, its weights then training through this node (a gate on a
    # shared layer's output)
    wraps_shared: ClassVar[bool] = False

    def build(self) -> nn.Module:
        raise NotImplementedError

    def state_layout(self) -> StateLayout:
        """The entries of the state dict of the module this spec builds, with their shapes and dtypes: what
        its weights must be. This default builds the module on the meta device (no initialisation, but
        torch); a kind that can say it from its fields overrides it (`growsearch inspect` then reads its
        graphs without torch)."""
        import torch

        with torch.device("meta"):
            state = self.build().state_dict()
        return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state.items()}

    def can_share(self, other: NodeSpec) -> bool:
        """Whether a node of this spec may compute with the weights of a node of spec `other`."""
        return self == other

    def output_shape(self, input_shape: Shape) -> Shape:
        raise NotImplementedError

    def macs(self, input_shape: Shape) -> int:
        """Multiply-adds of one forward pass of one sample."""
        return 0

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            data[field.name] = list(value) if isinstance(value, tuple) else value
        return data

    def _expect_features(self, input_shape: Shape, expected: int) -> None:
        if len(input_shape) != 1 or input_shape[0] != expected:
            raise GraphError(f"{self.kind} expects input of {expected} features, got shape {input_shape}")

    def _expect_channels(self, input_shape: Shape, expected: int) -> None:
        if len(input_shape) != 3 or input_shape[0] != expected:
            raise GraphError(f"{self.kind} expects input (C={expected}, H, W), got shape {input_shape}")


def spec_from_dict(data: dict[str, Any]) -> NodeSpec:
    data = dict(data)
    kind = data.pop("kind", None)
    cls = node_kind_class(str(kind))
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise GraphError(f"{kind} spec has unknown fields {sorted(unknown)}; expected {sorted(names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@node_kind
@dataclass(frozen=True)
class Input(NodeSpec):
    """The data entering the graph; holds no parameters."""

    kind: ClassVar[str] = "Input"
    shape: Shape = ()

    def build(self) -> nn.Module:
        from torch import nn

        return nn.Identity()

    def state_layout(self) -> StateLayout:
        return {}

    def output_shape(self, input_shape: Shape) -> Shape:
        return self.shape


@node_kind
@dataclass(frozen=True)
class Linear(NodeSpec):
    """A dense layer; `flatten` flattens a (C, H, W) input first."""

    kind: ClassVar[str] = "Linear"
    in_features: int = 0
    out_features: int = 0
    activation: str | None = "relu"
    bias: bool = True
    flatten: bool = False

    def build(self) -> nn.Module:
        from torch import nn

        from growsearch.graph.modules import with_activation

        layer = with_activation(
            nn.Linear(self.in_features, self.out_features, bias=self.bias), self.activation
        )
        return nn.Sequential(nn.Flatten(), layer) if self.flatten else layer

    def state_layout(self) -> StateLayout:
        layer = _activated(_dense(self.out_features, self.in_features, self.bias), self.activation)
        return _within(layer, "1") if self.flatten else layer

    def output_shape(self, input_shape: Shape) -> Shape:
        features = (math.prod(input_shape),) if self.flatten else input_shape
        self._expect_features(features, self.in_features)
        return (self.out_features,)

    def macs(self, input_shape: Shape) -> int:
        return self.in_features * self.out_features


@node_kind
@dataclass(frozen=True)
class Head(Linear):
    """A task's classifier: a linear layer with no activation."""

    kind: ClassVar[str] = "Head"
    activation: str | None = None


@node_kind
@dataclass(frozen=True)
class Conv2d(NodeSpec):
    """A convolution, its activation, and an optional max-pool of size `pool` after it; with `norm`, batch
    norm before the activation (per task: `Node.norms`)."""

    kind: ClassVar[str] = "Conv2d"
    in_channels: int = 0
    out_channels: int = 0
    kernel_size: int = 3
    stride: int = 1
    padding: int = 1
    activation: str | None = "relu"
    pool: int = 1
    norm: bool = False  # batch norm between the convolution (then without a bias) and the activation

    def build(self) -> nn.Module:
        from torch import nn

        from growsearch.graph.modules import TaskNorm, with_activation

        k, s, p = self.kernel_size, self.stride, self.padding
        conv: nn.Module = nn.Conv2d(self.in_channels, self.out_channels, k, s, p, bias=not self.norm)
        if self.norm:
            conv = nn.Sequential(conv, TaskNorm(self.out_channels))
        layer = with_activation(conv, self.activation)
        return nn.Sequential(layer, nn.MaxPool2d(self.pool)) if self.pool > 1 else layer

    def state_layout(self) -> StateLayout:
        conv = _conv(self.out_channels, self.in_channels, self.kernel_size, bias=not self.norm)
        if self.norm:
            conv = {**_within(conv, "0"), **_within(_batch_norm(self.out_channels), "1")}
        layer = _activated(conv, self.activation)
        return _within(layer, "0") if self.pool > 1 else layer

    def _conv_shape(self, input_shape: Shape) -> Shape:
        self._expect_channels(input_shape, self.in_channels)
        _, h, w = input_shape
        k, s, p = self.kernel_size, self.stride, self.padding
        return (self.out_channels, _conv_out(h, k, s, p), _conv_out(w, k, s, p))

    def output_shape(self, input_shape: Shape) -> Shape:
        c, h, w = self._conv_shape(input_shape)
        return (c, h // self.pool, w // self.pool)

    def macs(self, input_shape: Shape) -> int:
        c, h, w = self._conv_shape(input_shape)
        return c * h * w * self.in_channels * self.kernel_size**2


@node_kind
@dataclass(frozen=True)
class ResBlock(NodeSpec):
    """Two 3x3 convolutions with a skip connection (a 1x1 projection when the shape changes). With `norm`,
    the CIFAR ResNets' basic block with batch norm after each convolution: each task keeps its own
    normalisation (`Node.norms`), and a normalisation that is not the task's own runs on its fixed running
    statistics, so old tasks' outputs stay exact."""

    kind: ClassVar[str] = "ResBlock"
    in_channels: int = 0
    out_channels: int = 0
    stride: int = 1
    norm: bool = False

    def build(self) -> nn.Module:
        from growsearch.graph.modules import NormResidualBlock, ResidualBlock

        block = NormResidualBlock if self.norm else ResidualBlock
        return block(self.in_channels, self.out_channels, self.stride)

    def state_layout(self) -> StateLayout:
        c_in, c_out, bias = self.in_channels, self.out_channels, not self.norm
        layout = {
            **_within(_conv(c_out, c_in, 3, bias), "conv1"),
            **_within(_conv(c_out, c_out, 3, bias), "conv2"),
        }
        shortcut = _conv(c_out, c_in, 1, bias) if self.stride != 1 or c_in != c_out else {}
        if self.norm:
            layout |= {**_within(_batch_norm(c_out), "bn1"), **_within(_batch_norm(c_out), "bn2")}
            shortcut = {**_within(shortcut, "0"), **_within(_batch_norm(c_out), "1")} if shortcut else {}
        return layout | _within(shortcut, "shortcut")

    def output_shape(self, input_shape: Shape) -> Shape:
        self._expect_channels(input_shape, self.in_channels)
        _, h, w = input_shape
        return (self.out_channels, _conv_out(h, 3, self.stride, 1), _conv_out(w, 3, self.stride, 1))

    def macs(self, input_shape: Shape) -> int:
        c, h, w = self.output_shape(input_shape)
        total = c * h * w * 9 * (self.in_channels + c)
        if self.stride != 1 or self.in_channels != self.out_channels:
            total += c * h * w * self.in_channels
        return total


@node_kind
@dataclass(frozen=True)
class GlobalAvgPool(NodeSpec):
    """The mean of each channel over its positions: (C, H, W) -> (C,), a ResNet's last step before its
    classifier."""

    kind: ClassVar[str] = "GlobalAvgPool"

    def build(self) -> nn.Module:
        from torch import nn

        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def state_layout(self) -> StateLayout:
        return {}

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise GraphError(f"GlobalAvgPool expects a (C, H, W) input, got shape {input_shape}")
        return (input_shape[0],)

    def macs(self, input_shape: Shape) -> int:
        return math.prod(input_shape)


@node_kind
@dataclass(frozen=True)
class Flatten(NodeSpec):
    kind: ClassVar[str] = "Flatten"

    def build(self) -> nn.Module:
        from torch import nn

        return nn.Flatten()

    def state_layout(self) -> StateLayout:
        return {}

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)


@node_kind
@dataclass(frozen=True)
class Activation(NodeSpec):
    """A parameter-free join: its inputs are summed (or concatenated), then the activation applied.

    PNN uses it to form `relu(W h^t + sum_j U h^j)` from a column layer and its lateral adapters.
    """

    kind: ClassVar[str] = "Activation"
    activation: str | None = "relu"
    pool: int = 1

    def build(self) -> nn.Module:
        from torch import nn

        from growsearch.graph.modules import with_activation

        module = with_activation(nn.Identity(), self.activation)
        return nn.Sequential(module, nn.MaxPool2d(self.pool)) if self.pool > 1 else module

    def state_layout(self) -> StateLayout:
        return _activated({}, self.activation)

    def output_shape(self, input_shape: Shape) -> Shape:
        if self.pool > 1:
            c, h, w = input_shape
            return (c, h // self.pool, w // self.pool)
        return input_shape


@node_kind
@dataclass(frozen=True)
class Adapter(NodeSpec):
    """A PNN lateral connection from an older column into a newer column's layer.

    Dense: a one-hidden-layer MLP of `hidden` units. Convolutional (`conv_kernel` > 0): a 1x1 convolution
    reducing to `hidden` channels, then a convolution shaped like the target layer. It outputs the
    target layer's pre-activation shape, so it is summed with the target before the activation.
    """

    kind: ClassVar[str] = "Adapter"
    in_features: int = 0  # features (dense) or channels (conv) of the source layer
    out_features: int = 0  # features or channels of the target layer
    hidden: int = 0
    conv_kernel: int = 0  # 0: dense adapter; else the target conv's kernel, stride and padding
    conv_stride: int = 1
    conv_padding: int = 0
    pool: int = 1
    flatten: bool = False
    alpha_scale: float = 0.1

    @property
    def is_conv(self) -> bool:
        return self.conv_kernel > 0

    def build(self) -> nn.Module:
        from torch import nn

        from growsearch.graph.modules import ScaledAdapter

        if not self.is_conv:
            return ScaledAdapter(
                nn.Linear(self.in_features, self.hidden),
                nn.Linear(self.hidden, self.out_features),
                self.alpha_scale,
                self.flatten,
            )
        project: nn.Module = nn.Conv2d(
            self.hidden, self.out_features, self.conv_kernel, self.conv_stride, self.conv_padding
        )
        if self.pool > 1:
            project = nn.Sequential(project, nn.MaxPool2d(self.pool))
        return ScaledAdapter(nn.Conv2d(self.in_features, self.hidden, 1), project, self.alpha_scale, False)

    def state_layout(self) -> StateLayout:
        alpha: StateLayout = {"alpha": ((), FLOAT)}
        if not self.is_conv:
            reduce, project = _dense(self.hidden, self.in_features), _dense(self.out_features, self.hidden)
        else:
            reduce = _conv(self.hidden, self.in_features, 1)
            project = _conv(self.out_features, self.hidden, self.conv_kernel)
            project = _within(project, "0") if self.pool > 1 else project
        return alpha | _within(reduce, "reduce") | _within(project, "project")

    def output_shape(self, input_shape: Shape) -> Shape:
        if not self.is_conv:
            features = (math.prod(input_shape),) if self.flatten else input_shape
            self._expect_features(features, self.in_features)
            return (self.out_features,)
        self._expect_channels(input_shape, self.in_features)
        _, h, w = input_shape
        k, s, p = self.conv_kernel, self.conv_stride, self.conv_padding
        return (self.out_features, _conv_out(h, k, s, p) // self.pool, _conv_out(w, k, s, p) // self.pool)

    def macs(self, input_shape: Shape) -> int:
        if not self.is_conv:
            return self.in_features * self.hidden + self.hidden * self.out_features
        _, h, w = input_shape
        k, s, p = self.conv_kernel, self.conv_stride, self.conv_padding
        out_hw = _conv_out(h, k, s, p) * _conv_out(w, k, s, p)
        return h * w * self.in_features * self.hidden + out_hw * self.out_features * self.hidden * k * k


def layer_fields(base: NodeSpec, what: str) -> dict[str, Any]:
    """The fields of a node shaped like dense or conv layer `base` (the inverse of `dense_or_conv`):
    `in_features`, `out_features`, `activation`, and `kernel_size`, `stride`, `padding`, `pool` (conv) or
    `flatten` (dense). `what` names the node in the error for any other layer."""
    if isinstance(base, Conv2d):
        return {
            "in_features": base.in_channels,
            "out_features": base.out_channels,
            "kernel_size": base.kernel_size,
            "stride": base.stride,
            "padding": base.padding,
            "activation": base.activation,
            "pool": base.pool,
        }
    if isinstance(base, Linear) and not isinstance(base, Head):
        return {
            "in_features": base.in_features,
            "out_features": base.out_features,
            "activation": base.activation,
            "flatten": base.flatten,
        }
    raise GraphError(f"{what} a dense or conv layer, not a {base.kind}")


def dense_or_conv(spec: Any) -> NodeSpec:
    """The dense (`kernel_size` 0) or conv layer a node built over one (`layer_fields`) is shaped like: from
    its `in_features`, `out_features`, `kernel_size`, `stride`, `padding`, `activation`, `pool`, `flatten`."""
    if spec.kernel_size == 0:
        return Linear(spec.in_features, spec.out_features, spec.activation, True, spec.flatten)
    return Conv2d(
        spec.in_features,
        spec.out_features,
        spec.kernel_size,
        spec.stride,
        spec.padding,
        spec.activation,
        spec.pool,
    )


@node_kind
@dataclass(frozen=True)
class LSTM(NodeSpec):
    """A recurrent layer (Hochreiter & Schmidhuber 1997) over a (T, F) sequence: its hidden states as a
    (T, hidden) sequence (`return_sequence`, to feed another recurrent layer) or the last one, (hidden,).
    Several inputs are concatenated step by step (a GIM module reading older modules' states)."""

    kind: ClassVar[str] = "LSTM"
    input_size: int = 0
    hidden_size: int = 0
    return_sequence: bool = False

    def build(self) -> nn.Module:
        from growsearch.graph.modules import LSTMLayer

        return LSTMLayer(self.input_size, self.hidden_size, self.return_sequence)

    def state_layout(self) -> StateLayout:
        gates = 4 * self.hidden_size  # i, f, g, o
        return {
            "weight_ih": ((gates, self.input_size), FLOAT),
            "weight_hh": ((gates, self.hidden_size), FLOAT),
            "bias": ((gates,), FLOAT),
        }

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2 or input_shape[1] != self.input_size:
            raise GraphError(
                f"LSTM expects a (steps, features={self.input_size}) sequence, got shape {input_shape}"
            )
        steps = input_shape[0]
        return (steps, self.hidden_size) if self.return_sequence else (self.hidden_size,)

    def macs(self, input_shape: Shape) -> int:
        # per step, four gates each read the input and the previous hidden state
        return input_shape[0] * 4 * self.hidden_size * (self.input_size + self.hidden_size)


@node_kind
@dataclass(frozen=True)
class LastStep(NodeSpec):
    """The last step of a (T, F) sequence, (F,): an LSTM's final hidden state when its whole sequence is
    also read elsewhere (a GIM column's top module, read step by step by later modules)."""

    kind: ClassVar[str] = "LastStep"

    def build(self) -> nn.Module:
        from growsearch.graph.modules import LastStepModule

        return LastStepModule()

    def state_layout(self) -> StateLayout:
        return {}

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2:
            raise GraphError(f"LastStep expects a (steps, features) sequence, got shape {input_shape}")
        return input_shape[1:]
