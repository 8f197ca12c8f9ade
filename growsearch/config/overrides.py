"""Command-line overrides of a search space: `--set section.key=value`, typed and checked by the schema.

The value is read as YAML (`0.01`, `true`, `null`, `[64, 64]`, `{linear: 50}`), set at the dotted path of
the space's YAML form (`training.lr`, `options.prune_fractions`, `network.layers`), and the space is
checked again as a whole, so a bad override fails with the same one-line errors a bad file gets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from growsearch.config.schema import shown
from growsearch.config.space import SECTIONS, SearchSpace, space_from_dict
from growsearch.config.yaml_input import read_yaml
from growsearch.errors import ConfigError


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """`section.key=value` as (path, value)."""
    label = shown(text)
    path, sep, raw = text.partition("=")
    keys = tuple(path.strip().split("."))
    if not sep or len(keys) < 2 or not all(keys):
        raise ConfigError(f"--set {label}: expected section.key=value, e.g. training.lr=0.01")
    if keys[0] not in SECTIONS or keys[0] in ("method", "paper"):
        settable = ", ".join(s for s in SECTIONS if s not in ("method", "paper"))
        raise ConfigError(f"--set {label}: unknown section {keys[0]!r}; expected one of {settable}")
    value = read_yaml(raw, f"--set {label}: the value") if raw.strip() else None
    return keys, value


def apply_overrides(space: SearchSpace, overrides: Sequence[str]) -> SearchSpace:
    """`space` with every override applied, checked like a YAML file (errors name the override)."""
    if not overrides:
        return space
    data = space.to_dict()
    for text in overrides:
        keys, value = parse_override(text)
        target = data
        for key in keys[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[keys[-1]] = value
        if keys in (("network", "preset"), ("network", "layers")):  # a backbone replaces the other form
            target.pop("layers" if keys[-1] == "preset" else "preset", None)
        space_from_dict(
            data, f"--set {text if len(text) <= 80 else text[:77] + '...'}"
        )  # each override checked as it comes
    return space_from_dict(data, space.source)


def shortcut_overrides(
    epochs: int | None = None,
    trials: int | None = None,
    lr: float | None = None,
    device: str | None = None,
    network: str | None = None,
) -> list[str]:
    """The common shortcuts as `--set` overrides."""
    pairs = [("training.epochs", epochs), ("search.n_trials", trials), ("training.lr", lr)]
    pairs += [("training.device", device), ("network.preset", network)]
    return [f"{path}={value}" for path, value in pairs if value is not None]
