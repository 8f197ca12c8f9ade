"""Search-space YAML files: one per method, with the paper's defaults.

Sections: `method` (registered name), `paper` (citation, free text), `network` (the base layers),
`training` (how candidates train), `search` (trial budget, sampler, pruner, storage), `options` (the
method's own settings, checked against its Options dataclass) and optionally `benchmark` (defaults for
the CLI's --benchmark/--scenario/--tasks). Unknown keys and bad values are refused with the file, the
field and what was expected.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from growsearch.config_schema import from_mapping, require
from growsearch.errors import ConfigError
from growsearch.grow.backbone import LayerConfig, parse_layers
from growsearch.search.training import TrainingConfig

SECTIONS = ("method", "paper", "network", "training", "search", "options", "benchmark")


@dataclass(frozen=True)
class SearchConfig:
    """How each task's search runs (the `search:` section)."""

    n_trials: int | None = None  # None: the method's own budget (e.g. every MNTDP candidate)
    sampler: str | None = None  # None: the method's own sampler
    pruner: Literal["none", "median", "successive-halving", "hyperband"] = "none"
    storage: Literal["journal", "sqlite"] = "journal"
    # more than one objective: a multi-objective search (NSGA-II by default); the committed trial is the
    # Pareto point with the best accuracy, or, within `accuracy_tolerance` of it, the cheapest one
    objectives: tuple[Literal["accuracy", "added_parameters", "forward_macs"], ...] = ("accuracy",)
    accuracy_tolerance: float = 0.0
    # the ray backend: what each trial reserves, how many run at once, how often a lost trial is retried
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    memory_per_trial_mb: int | None = None
    max_concurrent_trials: int | None = None
    max_failures: int = 2
    reuse_workers: bool = True  # a worker process serves later trials too (imports torch once)

    def validate(self, where: str) -> None:
        if self.n_trials is not None:
            require(self.n_trials >= 1, f"{where}.n_trials", f"expected an integer >= 1, got {self.n_trials}")
        require(self.cpus_per_trial > 0, f"{where}.cpus_per_trial", "expected a number > 0")
        require(self.gpus_per_trial >= 0, f"{where}.gpus_per_trial", "expected a number >= 0 (e.g. 0.25)")
        require(self.max_failures >= 0, f"{where}.max_failures", "expected an integer >= 0")
        require(
            len(self.objectives) >= 1
            and self.objectives[0] == "accuracy"
            and len(set(self.objectives)) == len(self.objectives),
            f"{where}.objectives",
            f"expected accuracy, then any of added_parameters, forward_macs; got {list(self.objectives)}",
        )
        require(
            len(self.objectives) == 1 or self.pruner == "none",
            f"{where}.pruner",
            "expected none with several objectives (Optuna prunes single-objective searches only)",
        )
        require(self.accuracy_tolerance >= 0, f"{where}.accuracy_tolerance", "expected a number >= 0")

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def directions(self) -> list[str]:
        return ["maximize"] + ["minimize"] * (len(self.objectives) - 1)


@dataclass(frozen=True)
class BenchmarkDefaults:
    """The `benchmark:` section: defaults the command line can override."""

    name: str = "split-digits"
    scenario: str | None = None
    n_tasks: int | None = None
    max_per_task: int | None = None


@dataclass(frozen=True)
class SearchSpace:
    method: str
    layers: tuple[LayerConfig, ...]
    training: TrainingConfig
    search: SearchConfig
    options: Any  # the method's Options dataclass
    benchmark: BenchmarkDefaults
    paper: str = ""
    source: str = "<defaults>"
    raw: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """The fully resolved space, every default filled in (written to the run's config.yaml)."""
        return {
            "method": self.method,
            "paper": self.paper,
            "network": {"layers": [_layer_dict(layer) for layer in self.layers]},
            "training": dataclasses.asdict(self.training),
            "search": dataclasses.asdict(self.search),
            "options": _plain(dataclasses.asdict(self.options)),
            "benchmark": dataclasses.asdict(self.benchmark),
        }


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _layer_dict(layer: LayerConfig) -> dict:
    if layer.kind == "linear":
        return {"linear": {"width": layer.width, "activation": layer.activation}}
    options = dataclasses.asdict(layer)
    options.pop("kind")
    return {layer.kind: options}


def builtin_space_path(method: str) -> Path:
    """The YAML shipped for a method (top-level search_spaces/ in a checkout, package data in a wheel)."""
    checkout = Path(__file__).resolve().parents[2] / "search_spaces" / f"{method}.yaml"
    if checkout.is_file():
        return checkout
    return Path(str(importlib.resources.files("growsearch") / "search_spaces" / f"{method}.yaml"))


def load_space(source: str | Path) -> SearchSpace:
    """A search space from a YAML path, or from a method name (its shipped YAML)."""
    from growsearch.methods import get_method, method_names

    path = Path(source)
    if not path.suffix and not path.exists():
        get_method(str(source))  # an unknown name fails here with the list of methods
        path = builtin_space_path(str(source))
        if not path.is_file():
            raise ConfigError(
                f"method {source!r} has no shipped search space at {path}; known: {method_names()}"
            )
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such search-space file; expected a YAML path or one of {method_names()}"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return space_from_dict(data, str(path))


def space_from_dict(data: Any, where: str) -> SearchSpace:
    from growsearch.methods import get_method

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping with sections {', '.join(SECTIONS)}, got {data!r}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r}; expected some of: {', '.join(SECTIONS)}")
    if not isinstance(data.get("method"), str):
        raise ConfigError(f"{where}: method: expected a method name, got {data.get('method')!r}")
    method = get_method(data["method"])
    network = data.get("network")
    if not isinstance(network, dict) or set(network) != {"layers"}:
        raise ConfigError(f"{where}: network: expected a mapping with one key, layers, got {network!r}")
    paper = data.get("paper", "")
    if not isinstance(paper, str):
        raise ConfigError(f"{where}: paper: expected a citation string, got {paper!r}")
    return SearchSpace(
        method=data["method"],
        layers=parse_layers(network["layers"], f"{where}: network.layers"),
        training=from_mapping(TrainingConfig, data.get("training"), f"{where}: training"),
        search=from_mapping(SearchConfig, data.get("search"), f"{where}: search"),
        options=from_mapping(method.Options, data.get("options"), f"{where}: options"),
        benchmark=from_mapping(BenchmarkDefaults, data.get("benchmark"), f"{where}: benchmark"),
        paper=paper,
        source=where,
        raw=data,
    )
