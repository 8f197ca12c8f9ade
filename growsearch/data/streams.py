"""Stream transforms, written once for any base dataset: split, permuted, rotated, label-permuted.

Each turns a dataset's sorted class list into per-task plans: which classes a task holds, the label
each class gets under the per-task / shared conventions, and an input transform.

A split stream takes its classes in a class order (sorted ids, PyCIL's seed-1993 permutation, or one
drawn from the run seed) and cuts them into tasks: all of one size, or a larger first task (the B50
protocols: 50 classes, then equal steps). A class's label within its task is its position there; under
class-IL its position in the stream's class order (assemble.build_stream).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from growsearch.data.splitting import rng_for
from growsearch.errors import ConfigError

Transform = Callable[[torch.Tensor], torch.Tensor]
STREAM_KINDS = ("split", "permuted", "rotated", "label-permuted")
_PERMUTE, _LABELS, _ORDER = 1, 2, 4  # purposes mixed into per-task seeds (3: assemble's cap)

# how a split stream orders its classes before cutting them into tasks:
# "sorted": the dataset's class ids in order; "pycil": PyCIL's DataManager with shuffle=True, seed=1993
# (numpy's legacy generator seeded 1993 permutes the class indices; iCaRL's CIFAR-100 order);
# "seeded": a permutation drawn from the run seed (a different order per seed)
CLASS_ORDERS = ("sorted", "pycil", "seeded")
PYCIL_SEED = 1993


@dataclass(frozen=True)
class TaskPlan:
    """What task `task_id` holds: classes, their local labels and a transform of float inputs."""

    task_id: int
    classes: tuple[int, ...]
    local_labels: tuple[int, ...]  # label of classes[i] under the per-task / shared conventions
    transform: Transform | None = None  # None: inputs unchanged


def split_sizes(n_classes: int, n_tasks: int, first: int = 0) -> tuple[int, ...]:
    """Classes per task of a split stream: `first` in task 0 (0: as many as every other task), the
    rest in equal steps. Assumes check_n_tasks allowed n_tasks."""
    if not first:
        return (n_classes // n_tasks,) * n_tasks
    if n_tasks == 1:
        return (n_classes,)
    return (first, *((n_classes - first) // (n_tasks - 1),) * (n_tasks - 1))


def allowed_split_tasks(n_classes: int, first: int = 0) -> list[int]:
    """The task counts a split stream of `n_classes` allows: equal tasks, or `first` classes and then
    equal steps of the rest (or one task of all classes)."""
    if not first:
        return [k for k in range(1, n_classes + 1) if n_classes % k == 0]
    rest = n_classes - first
    return [1, *(k + 1 for k in range(1, rest + 1) if rest % k == 0)]


def check_n_tasks(kind: str, benchmark: str, n_tasks: object, n_classes: int, first: int = 0) -> int:
    """`n_tasks` if the stream kind allows it for `n_classes` classes, else ConfigError."""
    ok = isinstance(n_tasks, int) and not isinstance(n_tasks, bool) and n_tasks >= 1
    if kind == "split":
        allowed = allowed_split_tasks(n_classes, first)
        if not ok or n_tasks not in allowed:
            shape = (
                f"{first} classes first, then equal steps of the other {n_classes - first}"
                if first
                else "equal tasks"
            )
            raise ConfigError(
                f"n_tasks={n_tasks!r} is not allowed for {benchmark!r}: its {n_classes} classes must split "
                f"into {shape}; allowed n_tasks: {', '.join(map(str, allowed))}"
            )
    elif not ok:
        raise ConfigError(f"n_tasks={n_tasks!r} is not allowed for {benchmark!r}: expected an integer >= 1")
    return int(n_tasks)  # type: ignore[arg-type]


def check_class_order(benchmark: str, kind: str, order: object) -> str:
    """`order` if it names a class order and the stream kind takes one, else ConfigError."""
    if order not in CLASS_ORDERS:
        raise ConfigError(
            f"class_order={order!r} is not allowed for {benchmark!r}: "
            f"expected one of {', '.join(CLASS_ORDERS)}"
        )
    if kind != "split" and order != "sorted":
        raise ConfigError(
            f"class_order={order!r} is not allowed for {benchmark!r}: a {kind} stream holds every class in "
            "every task; only split streams take a class order"
        )
    return str(order)


def class_order(order: str, classes: tuple[int, ...], seed: int) -> tuple[int, ...]:
    """`classes` in the order `order` names (see CLASS_ORDERS); deterministic for `seed`.

    "pycil" permutes the positions of the sorted classes as PyCIL's DataManager does
    (np.random.seed(1993); np.random.permutation(n)): the stream's i-th class is sorted[perm[i]].
    """
    ordered = sorted(classes)
    if order == "sorted":
        return tuple(ordered)
    if order == "pycil":
        perm = np.random.RandomState(PYCIL_SEED).permutation(len(ordered))  # the legacy global generator's
    elif order == "seeded":
        perm = rng_for(seed, 0, _ORDER).permutation(len(ordered))
    else:
        raise ValueError(f"unknown class order {order!r}")
    return tuple(ordered[int(i)] for i in perm)


def plan_tasks(
    kind: str,
    classes: tuple[int, ...],
    input_shape: tuple[int, ...],
    n_tasks: int,
    seed: int,
    *,
    first: int = 0,
    order: str = "sorted",
) -> list[TaskPlan]:
    """The task plans of a `kind` stream over `classes` (sorted), deterministic for `seed`. `first` and
    `order` shape split streams only."""
    if kind == "split":
        return split_plans(class_order(order, classes, seed), n_tasks, first=first)
    if kind == "permuted":
        return permuted_plans(classes, input_shape, n_tasks, seed)
    if kind == "rotated":
        return rotated_plans(classes, n_tasks)
    if kind == "label-permuted":
        return label_permuted_plans(classes, n_tasks, seed)
    raise ValueError(f"unknown stream kind {kind!r}")


def split_plans(ordered: tuple[int, ...], n_tasks: int, *, first: int = 0) -> list[TaskPlan]:
    """Classes, in the order given, cut into n_tasks consecutive groups (split_sizes: equal, or `first`
    classes and then equal steps); a class's label is its position within its task."""
    plans, start = [], 0
    for t, size in enumerate(split_sizes(len(ordered), n_tasks, first)):
        group = tuple(ordered[start : start + size])
        plans.append(TaskPlan(t, group, tuple(range(len(group)))))
        start += size
    return plans


def permuted_plans(
    classes: tuple[int, ...], input_shape: tuple[int, ...], n_tasks: int, seed: int
) -> list[TaskPlan]:
    """All classes per task; task t > 0 permutes pixel positions (the same way in every channel)."""
    n_pixels = input_shape[-2] * input_shape[-1]
    plans = [TaskPlan(0, tuple(classes), tuple(range(len(classes))))]
    for t in range(1, n_tasks):
        perm = pixel_permutation(seed, t, n_pixels)
        plans.append(TaskPlan(t, tuple(classes), tuple(range(len(classes))), _permute_pixels(perm)))
    return plans


def pixel_permutation(seed: int, task_id: int, n_pixels: int) -> torch.Tensor:
    """The pixel permutation task `task_id` of a permuted stream uses (identity for task 0)."""
    if task_id == 0:
        return torch.arange(n_pixels)
    return torch.from_numpy(rng_for(seed, task_id, _PERMUTE).permutation(n_pixels))


def _permute_pixels(perm: torch.Tensor) -> Transform:
    def apply(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)

    return apply


def rotation_angle(task_id: int, n_tasks: int) -> float:
    """Degrees task `task_id` of a rotated stream turns its images by."""
    return task_id * 180.0 / n_tasks


def rotated_plans(classes: tuple[int, ...], n_tasks: int) -> list[TaskPlan]:
    """All classes per task; task t rotates images by t * 180 / n_tasks degrees."""
    labels = tuple(range(len(classes)))
    return [
        TaskPlan(t, tuple(classes), labels, _rotate(rotation_angle(t, n_tasks)) if t else None)
        for t in range(n_tasks)
    ]


def _rotate(angle: float) -> Transform:
    def apply(x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.functional import InterpolationMode, rotate

        return rotate(x, angle, interpolation=InterpolationMode.BILINEAR)

    return apply


def label_permutation(seed: int, task_id: int, n_classes: int) -> tuple[int, ...]:
    """The label permutation of task `task_id` of a label-permuted stream (identity for task 0)."""
    if task_id == 0:
        return tuple(range(n_classes))
    return tuple(int(v) for v in rng_for(seed, task_id, _LABELS).permutation(n_classes))


def label_permuted_plans(classes: tuple[int, ...], n_tasks: int, seed: int) -> list[TaskPlan]:
    """All classes, inputs unchanged; task t gives class i the label perm_t[i]."""
    return [TaskPlan(t, tuple(classes), label_permutation(seed, t, len(classes))) for t in range(n_tasks)]
