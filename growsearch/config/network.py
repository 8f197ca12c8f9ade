"""The `network:` section: the base architecture's layers as plain data (specs are built in `grow.backbone`).

YAML form: `layers: [{linear: 100}, {linear: 100}]`, or convolutional layers
`{conv: {channels: 32, kernel: 3, stride: 1, padding: 1, pool: 2}}`, `{resblock: {channels: 64, stride: 2}}`
(`norm: true`: with batch norm, per task), `{globalpool: {}}` (each channel's mean), or recurrent layers
over a sequence benchmark's (steps, features) inputs, `{lstm: 64}` or `{lstm: {width: 64}}`. Or a preset
backbone instead of `layers`: `preset: resnet18-reduced` (the reduced ResNet-18 of the continual-learning
literature: 20 base filters, as GEM, Mammoth and van de Ven et al. 2022 use) or `resnet32` (PyCIL's CIFAR
ResNet-32), both with batch norm.
A dense layer after a (C, H, W) shape or a sequence flattens its input.
"""

from __future__ import annotations

from dataclasses import dataclass

from growsearch.config.schema import check_keys, shown
from growsearch.errors import ConfigError

LAYER_KINDS = ("linear", "conv", "resblock", "lstm", "globalpool")
ACTIVATION_NAMES = (
    "relu",
    "tanh",
    "sigmoid",
)  # graph.specs.ACTIVATIONS builds them (a test keeps them equal)
DEFAULT_MAX_PARAMETERS = 100_000_000
# a layer's width, kernel, stride, padding or pool: sizes of tensors whose products must not overflow
MAX_LAYER_SIZE = 1_000_000


@dataclass(frozen=True)
class LayerConfig:
    kind: str  # one of LAYER_KINDS
    width: int  # units or channels
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    pool: int = 1
    activation: str = "relu"
    norm: bool = False  # conv and resblock: batch norm (each task its own)

    def to_dict(self) -> dict:
        if self.kind == "linear":
            return {"linear": {"width": self.width, "activation": self.activation}}
        if self.kind == "lstm":
            return {"lstm": {"width": self.width}}
        if self.kind == "globalpool":
            return {"globalpool": {}}
        options = {k: v for k, v in vars(self).items() if k not in ("kind", "norm")}
        return {self.kind: {**options, "norm": True} if self.norm else options}


def parse_layers(raw: object, where: str) -> tuple[LayerConfig, ...]:
    """Parse `network.layers` from YAML; `where` names the file and field in errors."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f"{where}: expected a non-empty list of layers like [{{linear: 100}}], got {shown(raw)}"
        )
    layers = []
    for i, entry in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(
                f"{at}: expected one of {{linear: N}}, {{conv: {{...}}}}, {{resblock: {{...}}}}, {{lstm: N}}"
            )
        ((kind, value),) = entry.items()
        if kind not in LAYER_KINDS:
            raise ConfigError(f"{at}: unknown layer kind {kind!r}; expected one of {', '.join(LAYER_KINDS)}")
        if kind == "globalpool":
            if value not in ({}, None, True):
                raise ConfigError(f"{at}.globalpool: expected {{}} (it has no settings), got {value!r}")
            layers.append(LayerConfig(kind=kind, width=0))
            continue
        options = {"width": value} if isinstance(value, int) else value
        if not isinstance(options, dict):
            raise ConfigError(f"{at}.{kind}: expected a width or a mapping, got {value!r}")
        options = dict(options)
        check_keys(options, f"{at}.{kind}")
        if "channels" in options:
            options["width"] = options.pop("channels")
        # an LSTM's gates have their own activations: only its width is set
        allowed = (
            {"width"}
            if kind == "lstm"
            else {"width", "kernel", "stride", "padding", "pool", "activation"}
            | ({"norm"} if kind in ("conv", "resblock") else set())
        )
        unknown = set(options) - allowed
        if unknown:
            raise ConfigError(
                f"{at}.{kind}: unknown keys {sorted(unknown)}; expected some of {sorted(allowed)}"
            )
        if not isinstance(options.get("norm", False), bool):
            raise ConfigError(f"{at}.{kind}.norm: expected true or false, got {options['norm']!r}")
        for key, val in options.items():
            if key in ("activation", "norm"):
                continue
            if not isinstance(val, int) or isinstance(val, bool) or val < 0:
                raise ConfigError(f"{at}.{kind}.{key}: expected a non-negative integer, got {shown(val)}")
            if val > MAX_LAYER_SIZE:
                raise ConfigError(f"{at}.{kind}.{key}: expected at most {MAX_LAYER_SIZE:,}, got {shown(val)}")
        for key in ("width", "kernel", "stride", "pool"):
            if options.get(key, 1) < 1:
                raise ConfigError(f"{at}.{kind}.{key}: expected an integer >= 1, got {options[key]}")
        activation = options.get("activation", "relu")
        if activation not in ACTIVATION_NAMES:
            raise ConfigError(
                f"{at}.{kind}.activation: unknown activation {activation!r}; expected one of "
                f"{', '.join(ACTIVATION_NAMES)}"
            )
        layers.append(LayerConfig(kind=kind, **options))
    return tuple(layers)


def _resnet(stem: int, stages: tuple[tuple[int, int], ...]) -> tuple[LayerConfig, ...]:
    """A CIFAR ResNet: a 3x3 stem convolution with batch norm, stages of basic blocks (the first block of a
    stage after the first halves the resolution), then each channel's mean."""
    layers = [LayerConfig("conv", stem, kernel=3, stride=1, padding=1, norm=True)]
    for i, (width, blocks) in enumerate(stages):
        for b in range(blocks):
            stride = 2 if i > 0 and b == 0 else 1
            layers.append(LayerConfig("resblock", width, stride=stride, norm=True))
    return (*layers, LayerConfig("globalpool", 0))


PRESETS = {
    # Lopez-Paz & Ranzato 2017 (GEM), Mammoth, van de Ven et al. 2022: ResNet-18 with 20 base filters
    "resnet18-reduced": _resnet(20, ((20, 2), (40, 2), (80, 2), (160, 2))),
    # He et al. 2016's CIFAR ResNet-32 (PyCIL's `resnet32`): 3 stages of 5 blocks, 16-32-64 channels
    "resnet32": _resnet(16, ((16, 5), (32, 5), (64, 5))),
}


def preset_layers(name: object, where: str) -> tuple[LayerConfig, ...]:
    """The layers of a preset backbone (`network.preset`)."""
    if name not in PRESETS:
        raise ConfigError(f"{where}: unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]  # type: ignore[index]
