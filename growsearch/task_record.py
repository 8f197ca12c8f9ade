"""What a committed task records (`tasks/T/record.json`), as a typed object read by attribute.

The JSON is the one the run folder has always held: the same keys, the task-inference rows only where the
task was inferred. Older run folders load: a field they lack takes its default, and keys this version does
not know are kept (`extra`) and written back as they were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_NUMBER = (int, float)


@dataclass(frozen=True)
class TaskRecord:
    task: int
    chosen_trial: int  # the study's trial the commit rule picked
    decisions: dict[str, Any]  # what the committed candidate decided
    accuracy_row: list[float]  # test accuracy on every task after this one (what the metrics read)
    parameters: int  # the whole graph's, after the commit
    train_macs: int  # every counted trial's compute, and the commit's retraining
    pass_macs: int  # three forward passes of the task's view over its training samples
    classes: list[int] = field(default_factory=list)
    mechanism: dict[str, Any] = field(default_factory=dict)  # what the method did (per method)
    val_accuracy: float | None = None  # the committed trial's validation accuracy
    pareto_front: list[int] | None = None  # a multi-objective search's Pareto trials
    view_parameters: int | None = None  # what the task's view computes with
    trials: dict[str, int] = field(default_factory=dict)  # per Optuna state, how many trials ended so
    seconds: float | None = None  # search, commit and accuracy row
    # where the task is inferred (class-IL, domain-IL, task-agnostic): the task-IL row (the task given),
    # the share of each task's test samples routed to it, and what inferred it
    task_il_accuracy_row: list[float] | None = None
    task_inference_row: list[float] | None = None
    task_inference: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys of an older or newer growsearch, kept

    @property
    def infers_task(self) -> bool:
        return self.task_inference is not None

    def to_json(self) -> dict[str, Any]:
        """The record.json mapping, keys in the order the run folder has always written them."""
        data: dict[str, Any] = {
            "task": self.task,
            "classes": self.classes,
            "chosen_trial": self.chosen_trial,
            "decisions": self.decisions,
            "mechanism": self.mechanism,
            "val_accuracy": self.val_accuracy,
            "pareto_front": self.pareto_front,
            "accuracy_row": self.accuracy_row,
        }
        if self.task_inference is not None:
            data["task_il_accuracy_row"] = self.task_il_accuracy_row
            data["task_inference_row"] = self.task_inference_row
            data["task_inference"] = self.task_inference
        data.update(
            parameters=self.parameters,
            view_parameters=self.view_parameters,
            train_macs=self.train_macs,
            pass_macs=self.pass_macs,
            trials=self.trials,
            seconds=self.seconds,
        )
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: Any, task: int | None = None) -> TaskRecord:
        """The record in `data` (a record.json mapping), its fields checked: a ValueError names the first
        field that is wrong (`task`: the task the folder holds)."""
        problem = _problem(data, task)
        if problem:
            raise ValueError(problem)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


def _problem(data: Any, task: int | None) -> str | None:
    """What is wrong with a record's fields, or None."""
    if not isinstance(data, Mapping):
        return "expected a mapping of the task's record"
    expected = {
        "task": int,
        "chosen_trial": int,
        "decisions": dict,
        "accuracy_row": list,
        "parameters": int,
        "train_macs": int,
        "pass_macs": int,
    }
    for name, kind in expected.items():
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"{name}: expected {kind.__name__}, got {value!r}"
    if task is not None and data["task"] != task:
        return f"task: expected {task} (the folder's task), got {data['task']}"
    row = data["accuracy_row"]
    if not all(_accuracy(a) for a in row):
        return f"accuracy_row: expected accuracies in [0, 1], got {row}"
    if len(row) <= data["task"]:
        return f"accuracy_row: expected at least {data['task'] + 1} entries, got {len(row)}"
    return None


def _accuracy(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and 0 <= value <= 1
