"""Stream transforms, written once for any base dataset: split, permuted, rotated, label-permuted.

Each turns a dataset's sorted class list into per-task plans: which classes a task holds, the label
each class gets under the per-task / shared conventions, and an input transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from growsearch.data.splitting import rng_for
from growsearch.errors import ConfigError

Transform = Callable[[torch.Tensor], torch.Tensor]
STREAM_KINDS = ("split", "permuted", "rotated", "label-permuted")
_PERMUTE, _LABELS = 1, 2  # purposes mixed into per-task seeds


@dataclass(frozen=True)
class TaskPlan:
    """What task `task_id` holds: classes, their local labels and a transform of float inputs."""

    task_id: int
    classes: tuple[int, ...]
    local_labels: tuple[int, ...]  # label of classes[i] under the per-task / shared conventions
    transform: Transform | None = None  # None: inputs unchanged


def check_n_tasks(kind: str, benchmark: str, n_tasks: object, n_classes: int) -> int:
    """`n_tasks` if the stream kind allows it for `n_classes` classes, else ConfigError."""
    ok = isinstance(n_tasks, int) and not isinstance(n_tasks, bool) and n_tasks >= 1
    if kind == "split":
        allowed = [k for k in range(1, n_classes + 1) if n_classes % k == 0]
        if not ok or n_tasks not in allowed:
            raise ConfigError(
                f"n_tasks={n_tasks!r} is not allowed for {benchmark!r}: its {n_classes} classes must split "
                f"into equal tasks; allowed n_tasks: {', '.join(map(str, allowed))}"
            )
    elif not ok:
        raise ConfigError(f"n_tasks={n_tasks!r} is not allowed for {benchmark!r}: expected an integer >= 1")
    return int(n_tasks)  # type: ignore[arg-type]


def plan_tasks(
    kind: str, classes: tuple[int, ...], input_shape: tuple[int, ...], n_tasks: int, seed: int
) -> list[TaskPlan]:
    """The task plans of a `kind` stream over `classes` (sorted), deterministic for `seed`."""
    if kind == "split":
        return split_plans(classes, n_tasks)
    if kind == "permuted":
        return permuted_plans(classes, input_shape, n_tasks, seed)
    if kind == "rotated":
        return rotated_plans(classes, n_tasks)
    if kind == "label-permuted":
        return label_permuted_plans(classes, n_tasks, seed)
    raise ValueError(f"unknown stream kind {kind!r}")


def split_plans(classes: tuple[int, ...], n_tasks: int) -> list[TaskPlan]:
    """Sorted classes cut into n_tasks equal groups; labels are positions within the task."""
    ordered, size = sorted(classes), len(classes) // n_tasks
    groups = [tuple(ordered[t * size : (t + 1) * size]) for t in range(n_tasks)]
    return [TaskPlan(t, g, tuple(range(len(g)))) for t, g in enumerate(groups)]


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
