"""CTrL streams (Veniat, Denoyer & Ranzato, ICLR 2021, "Efficient Continual Learning with Modular Networks
and Task-Driven Priors", section 4 and appendix A), built from the bundled 5,000-image MNIST (mnist5k).

In the paper t1..t5 are different datasets. Here every task is 28x28x1 MNIST, and an *unrelated* task
u_k (k = 1, 2, ...) is MNIST under its own fixed random pixel permutation and its own random label
permutation, so neither its inputs nor its labels relate to t1's or to another's. u_k depends on the seed
and k alone: t2..t5 are u_1..u_4 in every stream of a seed. Every task is 10-way (S_long's: 5-way) and
task-IL (a head per task). Training sets, balanced over the classes: LARGE 300 a class (3,000), SMALL a
tenth (300), STANDARD 100 a class (1,000) for every other task; the base's cut leaves 350 a class, so the
two t1 draws of S^- / S^+ fit disjoint. With these a 2x100 MLP learns a six-task stream in seconds on two
cores, and 300 samples leave t1 short enough of data (an independent model: ~0.79 test accuracy, against
~0.87 with 3,000) for transfer to show.

- `ctrl-minus` (S^-): t1 with LARGE samples, u_1..u_4, then t1 again (same inputs and labels) with a
  tenth of them (SMALL), drawn disjoint from t1's;
- `ctrl-plus` (S^+): t1 with SMALL first, u_1..u_4, t1 with LARGE last (disjoint);
- `ctrl-in` (S_in): t1, u_1..u_4, then t1's labels on images *rotated by 90 degrees*, samples disjoint
  from t1's. The paper changes the background colour: the low-level statistics move, the digit and its
  label do not. A quarter turn does that here (every pixel's mean, the strokes' orientations change; no
  digit turns into another, as 6 and 9 would under a half turn) and keeps the inputs sparse. The grayscale
  analogue of a new background, the inverted image 1 - x (or any dense background), does not train under
  the shared protocol (2x100 MLP, SGD 0.1, momentum 0.9, unnormalised inputs): measured, an independent
  model stays at chance (0.10) and PNN's loss becomes NaN;
- `ctrl-out` (S_out): t1, u_1..u_4, then t1's very training images with their labels shuffled by a fixed
  derangement (no class keeps its label id);
- `ctrl-pl` (S_pl): u_1..u_5, five unrelated tasks (plasticity);
- `ctrl-long` (S_long): 100 small tasks, each 5 random classes in a random label order under one input
  transform of a family (identity, mirrored left to right, one of four fixed pixel permutations, rotated
  by 90, 180 or 270 degrees; not inverted, for S_in's reason), with 10, 20 or 40 training samples a class.

Validation and test: every task of the fixed streams scores on the base's whole validation and test
splits (75 images per class each, never trained on), transformed and labelled as the task is; an S_long
task on 10 validation and 20 test images per class of its classes (a hundred tasks' full splits would hold
~270 MB). `max_per_task` caps each task's training split afterwards, keeping class proportions (S_out's
last task keeps exactly t1's capped images). Everything is deterministic for the run seed (`rng_for`
with the seed, the task and a purpose, as the other streams draw).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from growsearch.data.base import BaseDataset, RawSplit
from growsearch.data.scenarios import Scenario
from growsearch.data.splitting import rng_for, stratified_cap
from growsearch.data.task import Split, Task, TaskStream
from growsearch.errors import ConfigError

Transform = Callable[[torch.Tensor], torch.Tensor]

LENGTHS = {"ctrl-minus": 6, "ctrl-plus": 6, "ctrl-in": 6, "ctrl-out": 6, "ctrl-pl": 5, "ctrl-long": 100}
N_CLASSES, N_PIXELS = 10, 28 * 28
LARGE, STANDARD = 300, 100  # training samples per class: t1 of S^- / S^+, every other fixed-stream task
SMALL = LARGE // 10  # the other t1 of S^- / S^+: a tenth
LONG_WAYS = 5  # classes of an S_long task
LONG_TRAIN = (10, 20, 40)  # an S_long task's training samples per class: one of these
LONG_VAL, LONG_TEST = 10, 20  # an S_long task's validation / test samples per class
LONG_PERMUTATIONS = 4  # fixed pixel permutations S_long's tasks choose among
LONG_TRANSFORMS = (
    "identity",
    "mirrored",
    *(f"permuted-{i}" for i in range(LONG_PERMUTATIONS)),
    "rotated-90",
    "rotated-180",
    "rotated-270",
)
# purposes mixed into the per-task seeds (apart from streams.py's 1-3)
_DRAW, _PIXELS, _LABELS, _DERANGE, _LONG, _LONG_PIXELS, _CAP = 11, 12, 13, 14, 15, 16, 17


@dataclass(frozen=True)
class TaskPlan:
    """One task of a CTrL stream before its samples are gathered: indices into the base's splits, the
    label of each original class (-1: not in the task) and the input transform."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    labels: tuple[int, ...]  # labels[c]: this task's label of original class c
    transform: Transform | None = None  # None: inputs unchanged
    what: str = "t1"  # what the task is: t1, t1-rotated-90, unrelated-K, an S_long transform

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(c for c, label in enumerate(self.labels) if label >= 0)


def check_n_tasks(name: str, n_tasks: object) -> int:
    """`n_tasks` if stream `name` allows it (a fixed stream: its length; ctrl-long: 1..100)."""
    ok = isinstance(n_tasks, int) and not isinstance(n_tasks, bool)
    length = LENGTHS[name]
    if name == "ctrl-long":
        if not ok or not 1 <= n_tasks <= length:  # type: ignore[operator]
            raise ConfigError(
                f"n_tasks={n_tasks!r} is not allowed for {name!r}: expected an integer in 1..{length}"
            )
    elif not ok or n_tasks != length:
        raise ConfigError(
            f"n_tasks={n_tasks!r} is not allowed for {name!r}: its stream has a fixed length; "
            f"allowed n_tasks: {length}"
        )
    return int(n_tasks)  # type: ignore[arg-type]


# ---- transforms -------------------------------------------------------------------------------------------
def mirror(x: torch.Tensor) -> torch.Tensor:
    """Left and right swapped."""
    return torch.flip(x, dims=(-1,))


def permute_pixels(perm: torch.Tensor) -> Transform:
    def apply(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.reshape(n, c, h * w)[:, :, perm].reshape(n, c, h, w)

    return apply


def rotate90(k: int) -> Transform:
    """Turned by k quarter turns (counter-clockwise)."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        return torch.rot90(x, k, dims=(-2, -1))

    return apply


# ---- what a task is made of -----------------------------------------------------------------------------
def unrelated(seed: int, k: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """u_k's pixel permutation (of 784 positions) and label permutation (label of class c)."""
    pixels = torch.from_numpy(rng_for(seed, k, _PIXELS).permutation(N_PIXELS))
    labels = tuple(int(v) for v in rng_for(seed, k, _LABELS).permutation(N_CLASSES))
    return pixels, labels


def derangement(seed: int) -> tuple[int, ...]:
    """S_out's label shuffle: a random permutation of the 10 labels that moves every one."""
    rng = rng_for(seed, 0, _DERANGE)
    while True:
        perm = rng.permutation(N_CLASSES)
        if not (perm == np.arange(N_CLASSES)).any():
            return tuple(int(v) for v in perm)


def long_permutation(seed: int, i: int) -> torch.Tensor:
    """The i-th of S_long's fixed pixel permutations."""
    return torch.from_numpy(rng_for(seed, i, _LONG_PIXELS).permutation(N_PIXELS))


def _class_pools(y: torch.Tensor, rng: np.random.Generator) -> list[np.ndarray]:
    """Each class's sample indices in a seeded order (consecutive slices are disjoint draws)."""
    labels = y.numpy()
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(N_CLASSES)]


def _take(
    pools: list[np.ndarray], start: int, count: int, classes: tuple[int, ...] | None = None
) -> np.ndarray:
    chosen = [pools[c][start : start + count] for c in (range(N_CLASSES) if classes is None else classes)]
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class _Draws:
    """What the tasks of one stream draw from: the base dataset and the run seed."""

    base: BaseDataset
    seed: int

    @property
    def per_class(self) -> int:
        """Training images of the scarcest class (350 with the default cut)."""
        return int(torch.bincount(self.base.train.y, minlength=N_CLASSES).min())

    def task(
        self, train: np.ndarray, labels: tuple[int, ...], transform: Transform | None, what: str
    ) -> TaskPlan:
        """A fixed-stream task: these training images, the base's whole validation and test splits."""
        val, test = np.arange(len(self.base.val)), np.arange(len(self.base.test))
        return TaskPlan(train, val, test, labels, transform, what)

    def t1_pair(self, first: int, second: int) -> tuple[np.ndarray, np.ndarray]:
        """Two disjoint draws of t1's training images, `first` then `second` per class (the larger one
        shrinks if the base's cut leaves too few)."""
        pools = _class_pools(self.base.train.y, rng_for(self.seed, 0, _DRAW))
        room = self.per_class
        if first >= second:
            first = min(first, room - second)
        else:
            second = min(second, room - first)
        return _take(pools, 0, first), _take(pools, first, second)

    def unrelated(self, k: int) -> TaskPlan:
        pixels, labels = unrelated(self.seed, k)
        pools = _class_pools(self.base.train.y, rng_for(self.seed, k, _DRAW))
        train = _take(pools, 0, min(STANDARD, self.per_class))
        return self.task(train, labels, permute_pixels(pixels), f"unrelated-{k}")

    def long_task(self, i: int) -> TaskPlan:
        rng = rng_for(self.seed, i, _LONG)
        classes = tuple(int(c) for c in np.sort(rng.choice(N_CLASSES, LONG_WAYS, replace=False)))
        order = rng.permutation(LONG_WAYS)
        labels = [-1] * N_CLASSES
        for position, c in enumerate(classes):
            labels[c] = int(order[position])
        name = LONG_TRANSFORMS[int(rng.integers(len(LONG_TRANSFORMS)))]
        per_class = int(LONG_TRAIN[int(rng.integers(len(LONG_TRAIN)))])
        splits = [
            _take(_class_pools(split.y, rng), 0, count, classes)
            for split, count in (
                (self.base.train, per_class),
                (self.base.val, LONG_VAL),
                (self.base.test, LONG_TEST),
            )
        ]
        return TaskPlan(*splits, tuple(labels), _long_transform(self.seed, name), name)


def _long_transform(seed: int, name: str) -> Transform | None:
    if name == "identity":
        return None
    if name == "mirrored":
        return mirror
    kind, _, value = name.partition("-")
    if kind == "permuted":
        return permute_pixels(long_permutation(seed, int(value)))
    return rotate90(int(value) // 90)


def plan_stream(name: str, base: BaseDataset, n_tasks: int, seed: int) -> list[TaskPlan]:
    """The task plans of CTrL stream `name` (its first `n_tasks`, for ctrl-long)."""
    draws = _Draws(base, seed)
    if name == "ctrl-long":
        return [draws.long_task(i) for i in range(n_tasks)]
    middle = [draws.unrelated(k) for k in range(1, 5)]
    if name == "ctrl-pl":
        return [*middle, draws.unrelated(5)]
    same = tuple(range(N_CLASSES))
    sizes = {"ctrl-minus": (LARGE, SMALL), "ctrl-plus": (SMALL, LARGE)}.get(name, (STANDARD, STANDARD))
    first, second = draws.t1_pair(*sizes)
    t1 = draws.task(first, same, None, "t1")
    if name in ("ctrl-minus", "ctrl-plus"):
        last = draws.task(second, same, None, "t1")
    elif name == "ctrl-in":
        last = draws.task(second, same, rotate90(1), "t1-rotated-90")
    elif name == "ctrl-out":
        last = draws.task(first, derangement(seed), None, "t1-labels-shuffled")
    else:
        raise ValueError(f"unknown CTrL stream {name!r}")
    return [t1, *middle, last]


def build_stream(
    name: str,
    base: BaseDataset,
    scenario: Scenario,
    n_tasks: int,
    *,
    seed: int,
    max_per_task: int | None = None,
) -> TaskStream:
    """CTrL stream `name` over `base` (mnist5k), task-IL labels: each task's own, `n_outputs` its classes."""
    if scenario.name != "task-il":
        raise ConfigError(
            f"benchmark {name!r} is a task-IL stream; scenario {scenario.name!r} is not supported"
        )
    plans = plan_stream(name, base, n_tasks, seed)
    if max_per_task is not None:
        plans = [_capped(plan, base.train, max_per_task, seed, t) for t, plan in enumerate(plans)]
        if name == "ctrl-out":  # the last task keeps exactly t1's images
            plans[-1] = replace(plans[-1], train=plans[0].train)
    tasks = []
    for t, plan in enumerate(plans):
        train = _gather(base.train, plan.train, plan, base.scale)
        val = _gather(base.val, plan.val, plan, base.scale)
        test = _gather(base.test, plan.test, plan, base.scale)
        tasks.append(Task(t, plan.classes, train, val, test, len(plan.classes)))
    return TaskStream(name, scenario, base.input_shape, tuple(tasks))


def _capped(plan: TaskPlan, train: RawSplit, cap: int, seed: int, t: int) -> TaskPlan:
    keep = stratified_cap(train.y[plan.train].numpy(), cap, rng_for(seed, t, _CAP))
    return replace(plan, train=plan.train[keep])


def _gather(raw: RawSplit, idx: np.ndarray, plan: TaskPlan, scale: float) -> Split:
    index = torch.as_tensor(idx, dtype=torch.long)
    x = raw.x[index].to(torch.float32) / scale
    if plan.transform is not None and len(x):
        x = plan.transform(x)
    lookup = torch.tensor(plan.labels, dtype=torch.int64)
    return Split(x.contiguous(), lookup[raw.y[index]])
