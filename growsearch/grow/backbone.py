"""The base architecture a method grows: the YAML's `network.layers` (`config.network`) turned into specs,
each sized for the previous one's output. The input's shape decides (a (steps, features) sequence, a
(C, H, W) image, features), never a benchmark's name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from growsearch.config.network import LayerConfig
from growsearch.errors import ConfigError
from growsearch.graph.specs import (
    LSTM,
    Activation,
    Conv2d,
    GlobalAvgPool,
    Head,
    Linear,
    NodeSpec,
    ResBlock,
    Shape,
)


def layer_specs(
    layers: Sequence[LayerConfig], input_shape: Shape, widths: Sequence[int] | None = None
) -> list[NodeSpec]:
    """One spec per layer, each sized for the previous one's output. `widths` overrides the widths."""
    specs: list[NodeSpec] = []
    shape = tuple(input_shape)
    for i, layer in enumerate(layers):
        width = layer.width if widths is None else widths[i]
        spec: NodeSpec
        if layer.kind == "linear":
            flat = len(shape) > 1
            spec = Linear(math.prod(shape), width, activation=layer.activation, flatten=flat)
        elif layer.kind == "lstm":
            if len(shape) != 2:
                raise ConfigError(
                    f"layer {i} (lstm) needs a (steps, features) sequence input; it follows shape {shape}: "
                    "expected a benchmark of sequences (seq-split-digits, seq-split-mnist5k)"
                )
            feeds_recurrent = i + 1 < len(layers) and layers[i + 1].kind == "lstm"
            spec = LSTM(shape[1], width, return_sequence=feeds_recurrent)
        elif len(shape) != 3:
            raise ConfigError(f"layer {i} ({layer.kind}) needs a (C, H, W) input; it follows shape {shape}")
        elif layer.kind == "globalpool":
            spec = GlobalAvgPool()
        elif layer.kind == "conv":
            spec = Conv2d(
                shape[0],
                width,
                layer.kernel,
                layer.stride,
                layer.padding,
                layer.activation,
                layer.pool,
                layer.norm,
            )
        else:
            spec = ResBlock(shape[0], width, layer.stride, layer.norm)
        before, shape = shape, spec.output_shape(shape)
        if min(shape) < 1:
            raise ConfigError(
                f"network.layers[{i}] ({layer.kind}): a {before} input gives an output of shape {shape}; "
                "expected kernel, stride, padding and pool that fit the input"
            )
        specs.append(spec)
    return specs


BACKBONES = ("mlp", "conv", "resnet", "lstm")


def backbone_kind(layers: Sequence[LayerConfig]) -> str:
    """What a network is, as methods declare what they grow (`Method.backbones`): "lstm" (recurrent
    layers), "resnet" (residual blocks, batch norm, a global pool: the presets), "conv" (convolutions,
    dense layers after them), or "mlp" (dense layers only)."""
    kinds = {layer.kind for layer in layers}
    if "lstm" in kinds:
        return "lstm"
    if kinds & {"resblock", "globalpool"} or any(layer.norm for layer in layers):
        return "resnet"
    return "conv" if "conv" in kinds else "mlp"


def reading(spec: NodeSpec, input_shape: Shape) -> NodeSpec:
    """`spec` (a dense or conv layer) reading `input_shape`: itself when it does already, else its input
    resized, its output kept (a layer above a widened one)."""
    if isinstance(spec, Conv2d) and len(input_shape) == 3 and input_shape[0] != spec.in_channels:
        return replace(spec, in_channels=input_shape[0])
    if isinstance(spec, Linear) and math.prod(input_shape) != spec.in_features:
        return replace(spec, in_features=math.prod(input_shape), flatten=len(input_shape) > 1)
    return spec


def count_parameters(specs: Sequence[NodeSpec]) -> int:
    """Parameters of the layers, counted without allocating them (modules built on the meta device)."""
    import torch

    with torch.device("meta"):
        return sum(p.numel() for spec in specs for p in spec.build().parameters())


def head_spec(feature_shape: Shape, n_outputs: int) -> Head:
    return Head(math.prod(feature_shape), n_outputs, flatten=len(feature_shape) > 1)


def split_activation(spec: NodeSpec) -> tuple[NodeSpec, Activation]:
    """The layer without its activation (and pool), and a join node that applies them.

    PNN sums a column layer's pre-activation with its lateral adapters, then applies the activation.
    """
    if isinstance(spec, Linear | Conv2d):
        pool = spec.pool if isinstance(spec, Conv2d) else 1
        pre = (
            replace(spec, activation=None, pool=1)
            if isinstance(spec, Conv2d)
            else replace(spec, activation=None)
        )
        return pre, Activation(spec.activation, pool)
    raise ConfigError(f"lateral connections need a linear or conv layer with an activation, got {spec}")
