"""What a committed task records (`tasks/T/record.json`), as a typed object read by attribute.

The JSON is the one the run folder has always held: the same keys, the task-inference rows only where the
task was inferred. Older run folders load: a field they lack takes its default, and keys this version does
not know are kept (`extra`) and written back as they were.
"""

from __future__ import annotations

import dataclasses
import math
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
    # how clear the commit was (`decision_margin`): the runner-up, the validation accuracy gap, the same in
    # validation samples, and whether it was a tie (one sample or less) that size broke
    decision: dict[str, Any] | None = None
    # what the run keeps to answer after the task, counted whole (`search.kept_size`): the graph's weights,
    # the methods' state, gates, masks and owners (in bits), task inference; its exemplar memories apart
    kept: dict[str, Any] | None = None
    # the part of train_macs spent training the task inference before the search (autoencoders, the task
    # classifier); None where the run infers no task
    inference_macs: int | None = None
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
            **({} if self.inference_macs is None else {"inference_macs": self.inference_macs}),
            trials=self.trials,
            seconds=self.seconds,
        )
        if self.decision is not None:
            data["decision"] = self.decision
        if self.kept is not None:
            data["kept"] = self.kept
        return {**data, **self.extra}

    @property
    def kept_parameters(self) -> int:
        """Everything the run keeps to answer after this task (the graph's weights for an older record)."""
        return int(self.kept["kept_parameters"]) if self.kept else self.parameters

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
    """What is wrong with a record's fields, or None: the first field of the wrong type, a count below zero,
    an accuracy outside [0, 1], a figure that is NaN or infinite."""
    if not isinstance(data, Mapping):
        return "expected a mapping of the task's record"
    if not all(isinstance(key, str) for key in data):
        return "expected field names (strings) as keys"
    for name, (check, expected) in _FIELDS.items():
        if name not in data:
            if name in _REQUIRED:
                return f"{name}: expected {expected}, but the field is missing"
            continue
        if not check(data[name]):
            return f"{name}: expected {expected}, got {_shown(data[name])}"
    if task is not None and data["task"] != task:
        return f"task: expected {task} (the folder's task), got {data['task']}"
    row = data["accuracy_row"]
    if len(row) <= data["task"]:
        return f"accuracy_row: expected at least {data['task'] + 1} entries, got {len(row)}"
    for name in ("task_il_accuracy_row", "task_inference_row"):
        other = data.get(name)
        if other is not None and len(other) != len(row):
            return f"{name}: expected {len(row)} entries (as accuracy_row), got {len(other)}"
    bad = _not_finite(data, "record")
    if bad:
        return f"{bad}: expected a finite number, got NaN or infinity"
    return None


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _accuracy(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and 0 <= value <= 1


def _accuracies(value: Any) -> bool:
    return isinstance(value, list) and all(_accuracy(a) for a in value)


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


def _seconds(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and 0 <= value < math.inf


def _trial_counts(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _count(v) for k, v in value.items())


_FIELDS: dict[str, tuple[Any, str]] = {
    "task": (_count, "a task number >= 0"),
    "chosen_trial": (_count, "a trial number >= 0"),
    "decisions": (lambda v: isinstance(v, dict), "a mapping of decisions"),
    "accuracy_row": (_accuracies, "accuracies in [0, 1]"),
    "parameters": (_count, "a count of parameters >= 0"),
    "train_macs": (_count, "a count of multiply-adds >= 0"),
    "pass_macs": (_count, "a count of multiply-adds >= 0"),
    "inference_macs": (_optional(_count), "null or a count of multiply-adds >= 0"),
    "classes": (lambda v: isinstance(v, list) and all(_count(c) for c in v), "a list of class numbers >= 0"),
    "mechanism": (lambda v: isinstance(v, dict), "a mapping of what the method did"),
    "val_accuracy": (_optional(_accuracy), "null or an accuracy in [0, 1]"),
    "pareto_front": (
        _optional(lambda v: isinstance(v, list) and all(_count(n) for n in v)),
        "null or a list of trial numbers",
    ),
    "view_parameters": (_optional(_count), "null or a count of parameters >= 0"),
    "trials": (_trial_counts, "a mapping of trial states to counts >= 0"),
    "seconds": (_optional(_seconds), "null or a number of seconds >= 0"),
    "task_il_accuracy_row": (_optional(_accuracies), "null or accuracies in [0, 1]"),
    "task_inference_row": (_optional(_accuracies), "null or a list of shares in [0, 1]"),
    "task_inference": (_optional(lambda v: isinstance(v, str)), "null or what inferred the task"),
    "decision": (_optional(lambda v: isinstance(v, dict)), "null or a mapping of the commit's margin"),
    "kept": (
        _optional(lambda v: isinstance(v, dict) and _count(v.get("kept_parameters"))),
        "null or a mapping of what the run keeps, with its kept_parameters count",
    ),
}
_REQUIRED = ("task", "chosen_trial", "decisions", "accuracy_row", "parameters", "train_macs", "pass_macs")


def _not_finite(value: Any, where: str) -> str | None:
    """The path of the first float in `value` that is NaN or infinite (json reads NaN and Infinity)."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return at.removeprefix("record.")
        if isinstance(item, dict):
            stack.extend((v, f"{at}.{k}") for k, v in item.items())
        elif isinstance(item, list):
            stack.extend((v, f"{at}[{i}]") for i, v in enumerate(item))
    return None


def _shown(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a very large integer"
    return text if len(text) <= 80 else text[:77] + "..."


def decision_margin(chosen_accuracy: float, others: list[tuple[int, float]], validation_samples: int) -> dict:
    """How clear a commit was: the best other candidate (`others`: trial number and validation accuracy), the
    committed one's validation accuracy minus it, that gap in validation samples, and `tie`: one sample or
    less apart, so the commit rule's preference for the smaller candidate decided. No other candidate: no
    runner-up, no tie."""
    if not others:
        return {
            "runner_up_trial": None,
            "accuracy_gap": None,
            "samples": None,
            "tie": False,
            "validation_samples": validation_samples,
        }
    trial, accuracy = max(others, key=lambda other: (other[1], -other[0]))
    gap = chosen_accuracy - accuracy
    samples = round(gap * validation_samples)
    return {
        "runner_up_trial": trial,
        "accuracy_gap": gap,
        "samples": samples,
        "tie": abs(samples) <= 1,
        "validation_samples": validation_samples,
    }
