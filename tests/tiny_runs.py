"""Tiny search spaces on the embedded split-digits stream, so every test runs the real code paths (real
Optuna storage in a temporary run folder) in a second or two."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from growsearch.runner import RunOptions
from growsearch.search.space import SearchSpace, builtin_space_path, space_from_dict

TINY_TRAINING = {"epochs": 2, "lr": 0.05, "batch_size": 32}


def tiny_space(method: str, **sections: Any) -> SearchSpace:
    """The shipped YAML of `method`, shrunk: two 16-unit layers, two epochs; `sections` override."""
    data = yaml.safe_load(builtin_space_path(method).read_text())
    data = copy.deepcopy(data)
    data["network"] = {"layers": [{"linear": 16}, {"linear": 16}]}
    data["training"] = {**data.get("training", {}), **TINY_TRAINING}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return space_from_dict(data, f"<tiny {method}>")


def tiny_options(seed: int = 0, **extra: Any) -> RunOptions:
    return RunOptions(benchmark="split-digits", n_tasks=None, max_per_task=80, seed=seed, **extra)
