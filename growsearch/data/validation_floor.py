"""A floor on each task's validation samples (`benchmark.min_val_per_task`, `--min-val-per-task`).

A commit decided on a few dozen validation samples can rest on one of them (the record's `decision` says
so). Where a task's validation split holds fewer samples than the floor, the missing ones move to it from
the task's training split, drawn at random (seeded by the run's seed and the task), as long as training
keeps at least `KEEP_TRAIN` of its samples. Where that cannot reach the floor (split-digits: about 54
validation samples a task against some 250 to train on), the task keeps its split, and the stream says the
data did not allow it (the run's config.yaml keeps what was done). A floor of 0 leaves every split as it is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from growsearch.data.splitting import rng_for
from growsearch.data.task import Split, Task, TaskStream

KEEP_TRAIN = 0.9  # a task's training split gives at most a tenth of its samples to validation
_FLOOR = 5  # purpose mixed into the per-task seed of the samples moved


def with_validation_floor(stream: TaskStream, floor: int, seed: int) -> TaskStream:
    """`stream` with each task's validation split raised to `floor` samples where its training split can
    spare them (see the module doc); its `validation` says what was done."""
    tasks, raised, below = [], [], []
    for task in stream.tasks:
        missing = floor - len(task.val)
        if missing <= 0:
            tasks.append(task)
        elif missing <= int(len(task.train) * (1 - KEEP_TRAIN)):
            tasks.append(_moved(task, missing, seed))
            raised.append(task.task_id)
        else:
            tasks.append(task)
            below.append(task.task_id)
    done: dict[str, Any] = {
        "floor": floor,
        "per_task": [len(t.val) for t in tasks],
        "raised": raised,
        "below": below,  # the data did not allow the floor: training would keep under KEEP_TRAIN
    }
    return dataclasses.replace(stream, tasks=tuple(tasks), validation=done)


def _moved(task: Task, n: int, seed: int) -> Task:
    """The task with `n` of its training samples, drawn at random, moved to its validation split."""
    order = torch.from_numpy(rng_for(seed, task.task_id, _FLOOR).permutation(len(task.train)))
    moved, kept = order[:n].sort().values, order[n:].sort().values
    train = Split(task.train.x[kept], task.train.y[kept])
    val = Split(torch.cat([task.val.x, task.train.x[moved]]), torch.cat([task.val.y, task.train.y[moved]]))
    return dataclasses.replace(task, train=train, val=val)
