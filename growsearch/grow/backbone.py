"""The base architecture a method grows: a list of layers from the search-space YAML, turned into specs.

YAML form (under `network:`): `layers: [{linear: 100}, {linear: 100}]`, or convolutional layers
`{conv: {channels: 32, kernel: 3, stride: 1, padding: 1, pool: 2}}`, `{resblock: {channels: 64, stride: 2}}`.
A dense layer after a (C, H, W) shape flattens its input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from growsearch.errors import ConfigError
from growsearch.graph.specs import Activation, Conv2d, Head, Linear, NodeSpec, ResBlock, Shape

LAYER_KINDS = ("linear", "conv", "resblock")


@dataclass(frozen=True)
class LayerConfig:
    kind: str  # one of LAYER_KINDS
    width: int  # units or channels
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    pool: int = 1
    activation: str = "relu"


def parse_layers(raw: object, where: str) -> tuple[LayerConfig, ...]:
    """Parse `network.layers` from YAML; `where` names the file and field in errors."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of layers like [{{linear: 100}}], got {raw!r}")
    layers = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(
                f"{at}: expected one of {{linear: N}}, {{conv: {{...}}}}, {{resblock: {{...}}}}"
            )
        ((kind, value),) = entry.items()
        if kind not in LAYER_KINDS:
            raise ConfigError(f"{at}: unknown layer kind {kind!r}; expected one of {', '.join(LAYER_KINDS)}")
        options = {"width": value} if isinstance(value, int) else value
        if not isinstance(options, dict):
            raise ConfigError(f"{at}.{kind}: expected a width or a mapping, got {value!r}")
        options = dict(options)
        if "channels" in options:
            options["width"] = options.pop("channels")
        allowed = {"width", "kernel", "stride", "padding", "pool", "activation"}
        unknown = set(options) - allowed
        if unknown:
            raise ConfigError(
                f"{at}.{kind}: unknown keys {sorted(unknown)}; expected some of {sorted(allowed)}"
            )
        for key, val in options.items():
            if key != "activation" and (not isinstance(val, int) or isinstance(val, bool) or val < 0):
                raise ConfigError(f"{at}.{kind}.{key}: expected a non-negative integer, got {val!r}")
        if options.get("width", 0) < 1:
            raise ConfigError(f"{at}.{kind}: expected a width of at least 1")
        layers.append(LayerConfig(kind=kind, **options))
    return tuple(layers)


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
        elif len(shape) != 3:
            raise ConfigError(f"layer {i} ({layer.kind}) needs a (C, H, W) input; it follows shape {shape}")
        elif layer.kind == "conv":
            spec = Conv2d(
                shape[0], width, layer.kernel, layer.stride, layer.padding, layer.activation, layer.pool
            )
        else:
            spec = ResBlock(shape[0], width, layer.stride)
        shape = spec.output_shape(shape)
        specs.append(spec)
    return specs


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
