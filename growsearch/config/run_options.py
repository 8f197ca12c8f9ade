"""What a run adds to a search space (`RunOptions`: benchmark, scenario, tasks, seed, backend, loggers), and
the checks of what a user typed for them, cheap enough to run before torch is imported.

The names of backends and loggers are listed here as plain strings (`growsearch.backends.BACKENDS` and
`growsearch.search.loggers.LOGGERS` build them; a test keeps the lists equal), so that a misspelt
`--backend`, or a logger whose extra is not installed, is refused in well under a second, before anything
is printed or written.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass

from growsearch.config.schema import require, shown
from growsearch.errors import ConfigError, UnknownNameError

BACKEND_NAMES = ("optuna", "ray")
LOGGER_NAMES = ("csv", "tensorboard", "wandb", "mlflow")
LOGGER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # what each extra adds
MAX_SEED = 2**63 - 1  # a 64-bit signed integer: what torch, numpy and config.yaml hold
MAX_TASKS = 10_000  # a stream's tasks (a benchmark checks its own number too)
MAX_SAMPLES = 2**31 - 1


@dataclass(frozen=True)
class RunOptions:
    """What a run adds to a search space (how it joins Ray is `RayOptions`, apart). Benchmark fields left
    None take the YAML's `benchmark:` section."""

    benchmark: str | None = None
    scenario: str | None = None
    n_tasks: int | None = None
    max_per_task: int | None = None
    val_fraction: float | None = None  # None: the YAML's benchmark.val_fraction
    min_val_per_task: int | None = None  # None: the YAML's benchmark.min_val_per_task
    data_root: str | None = None
    download: bool = False
    seed: int = 0
    backend: str = "optuna"
    loggers: tuple[str, ...] = ()  # beside curves.csv: tensorboard, wandb, mlflow

    def validate(self, where: str) -> None:
        check_run_options(self, lambda name: f"{where}.{name}")


def check_run_options(options: RunOptions, label: Callable[[str], str]) -> None:
    """Refuse a value no run can use, naming it by `label(field)` (`--seed` on the command line,
    `config.yaml: run.seed` on resume): an empty name, a count below 1 or past a sane bound, a seed that
    is not 64 bits, an unknown backend or logger, a logger whose package is not installed."""
    for name in ("benchmark", "scenario", "data_root"):
        value = getattr(options, name)
        require(value is None or bool(value.strip()), label(name), f"expected a name, got {shown(value)}")
    for name, bound in (("n_tasks", MAX_TASKS), ("max_per_task", MAX_SAMPLES)):
        value = getattr(options, name)
        if value is not None:
            expected = f"expected an integer from 1 to {bound:,}, got {shown(value)}"
            require(1 <= value <= bound, label(name), expected)
    if options.val_fraction is not None:
        check_val_fraction(options.val_fraction, label("val_fraction"))
    if options.min_val_per_task is not None:
        check_val_floor(options.min_val_per_task, label("min_val_per_task"))
    seed = options.seed
    expected = f"expected an integer from 0 to 2**63 - 1, got {shown(seed)}"
    require(0 <= seed <= MAX_SEED, label("seed"), expected)
    if options.backend not in BACKEND_NAMES:
        raise UnknownNameError("backend", options.backend, BACKEND_NAMES)
    for logger in options.loggers:
        check_logger(logger)


def check_val_fraction(value: float, where: str) -> None:
    """A validation share a split can hold: above 0 (every commit is decided on it) and at most 0.5."""
    require(
        0 < value <= 0.5,
        where,
        f"expected a share of the training pool above 0 and at most 0.5, got {shown(value)}",
    )


def check_val_floor(value: int, where: str) -> None:
    """A floor on a task's validation samples: 0 (none) or a count."""
    expected = f"expected an integer from 0 to {MAX_SAMPLES:,}, got {shown(value)}"
    require(0 <= value <= MAX_SAMPLES, where, expected)


def check_logger(name: str) -> None:
    """Refuse an unknown logger, or one whose extra is not installed (finding a package imports nothing)."""
    if name not in LOGGER_NAMES:
        raise UnknownNameError("logger", name, LOGGER_NAMES)
    package = LOGGER_PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"--logger {name} needs the {package} package: pip install 'growsearch[{name}]'")


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_run_name(name: str) -> str:
    """A run's name is one path component of letters, digits and . _ + - (at most 100 characters, not
    starting with a dot): the run folder stays inside --runs-dir."""
    if not RUN_NAME.fullmatch(name):
        raise ConfigError(
            f"--name {shown(name)}: expected one folder name of at most 100 letters, digits, '.', '_', '+' "
            "or '-', starting with a letter or digit (no '/', not '.' or '..')"
        )
    return name
