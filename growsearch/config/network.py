"""The `network:` section: the base architecture's layers as plain data (specs are built in `grow.backbone`).

YAML form: `layers: [{linear: 100}, {linear: 100}]`, or convolutional layers
`{conv: {channels: 32, kernel: 3, stride: 1, padding: 1, pool: 2}}`, `{resblock: {channels: 64, stride: 2}}`,
or recurrent layers over a sequence benchmark's (steps, features) inputs, `{lstm: 64}` or
`{lstm: {width: 64}}`.
A dense layer after a (C, H, W) shape or a sequence flattens its input.
"""

from __future__ import annotations

from dataclasses import dataclass

from growsearch.errors import ConfigError

LAYER_KINDS = ("linear", "conv", "resblock", "lstm")
ACTIVATION_NAMES = (
    "relu",
    "tanh",
    "sigmoid",
)  # graph.specs.ACTIVATIONS builds them (a test keeps them equal)
DEFAULT_MAX_PARAMETERS = 100_000_000


@dataclass(frozen=True)
class LayerConfig:
    kind: str  # one of LAYER_KINDS
    width: int  # units or channels
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    pool: int = 1
    activation: str = "relu"

    def to_dict(self) -> dict:
        if self.kind == "linear":
            return {"linear": {"width": self.width, "activation": self.activation}}
        if self.kind == "lstm":
            return {"lstm": {"width": self.width}}
        options = {k: v for k, v in vars(self).items() if k != "kind"}
        return {self.kind: options}


def parse_layers(raw: object, where: str) -> tuple[LayerConfig, ...]:
    """Parse `network.layers` from YAML; `where` names the file and field in errors."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of layers like [{{linear: 100}}], got {raw!r}")
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
        options = {"width": value} if isinstance(value, int) else value
        if not isinstance(options, dict):
            raise ConfigError(f"{at}.{kind}: expected a width or a mapping, got {value!r}")
        options = dict(options)
        if "channels" in options:
            options["width"] = options.pop("channels")
        # an LSTM's gates have their own activations: only its width is set
        allowed = (
            {"width"} if kind == "lstm" else {"width", "kernel", "stride", "padding", "pool", "activation"}
        )
        unknown = set(options) - allowed
        if unknown:
            raise ConfigError(
                f"{at}.{kind}: unknown keys {sorted(unknown)}; expected some of {sorted(allowed)}"
            )
        for key, val in options.items():
            if key != "activation" and (not isinstance(val, int) or isinstance(val, bool) or val < 0):
                raise ConfigError(f"{at}.{kind}.{key}: expected a non-negative integer, got {val!r}")
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
