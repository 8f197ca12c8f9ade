"""Turn task plans over a base dataset into a TaskStream, labelled the way a scenario presents them."""

from __future__ import annotations

import torch

from growsearch.data.base import BaseDataset, RawSplit
from growsearch.data.normalize import Normalization
from growsearch.data.scenarios import Scenario
from growsearch.data.splitting import rng_for, stratified_cap
from growsearch.data.streams import TaskPlan
from growsearch.data.task import Split, Task, TaskStream

_CAP = 3  # purpose mixed into the per-task seed of the max_per_task subsample


def build_stream(
    benchmark: str,
    base: BaseDataset,
    scenario: Scenario,
    plans: list[TaskPlan],
    *,
    seed: int,
    max_per_task: int | None = None,
    normalization: Normalization | None = None,
) -> TaskStream:
    """One Task per plan: the plan's classes from each split, transformed, normalised and labelled.

    per-task / shared labels are the plan's local labels (n_outputs = classes in the task); disjoint
    labels are the class's position in the stream's class order, the order the tasks meet the classes
    (n_outputs = classes in the stream); for sorted split plans and all-class streams that is the sorted
    class ids. Inputs are stored / scale, then the plan's transform, then `normalization` if given.
    """
    stream_classes = list(dict.fromkeys(c for plan in plans for c in plan.classes))
    global_index = {c: i for i, c in enumerate(stream_classes)}
    tasks = []
    for plan in plans:
        if scenario.labels == "disjoint":
            labels, n_outputs = [global_index[c] for c in plan.classes], len(stream_classes)
        else:
            labels, n_outputs = list(plan.local_labels), len(plan.classes)
        cap = None if max_per_task is None else (max_per_task, rng_for(seed, plan.task_id, _CAP))
        train = _task_split(base.train, base.scale, plan, labels, cap, normalization)
        val = _task_split(base.val, base.scale, plan, labels, None, normalization)
        test = _task_split(base.test, base.scale, plan, labels, None, normalization)
        tasks.append(Task(plan.task_id, plan.classes, train, val, test, n_outputs))
    return TaskStream(benchmark, scenario, base.input_shape, tuple(tasks), normalization)


def _task_split(
    raw: RawSplit,
    scale: float,
    plan: TaskPlan,
    labels: list[int],
    cap: tuple | None,
    normalization: Normalization | None,
) -> Split:
    classes = torch.tensor(plan.classes, dtype=torch.int64)
    idx = torch.nonzero(torch.isin(raw.y, classes)).flatten()
    if cap is not None:
        idx = idx[torch.from_numpy(stratified_cap(raw.y[idx].numpy(), cap[0], cap[1]))]
    x = raw.x[idx].to(torch.float32) / scale
    if plan.transform is not None and len(x):
        x = plan.transform(x)
    if normalization is not None:
        x = normalization.apply(x)
    size = int(max(classes.max(), raw.y.max() if len(raw) else 0)) + 1
    lookup = torch.full((size,), -1, dtype=torch.int64)
    lookup[classes] = torch.tensor(labels, dtype=torch.int64)
    return Split(x.contiguous(), lookup[raw.y[idx]])
