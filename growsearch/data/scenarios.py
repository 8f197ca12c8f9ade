"""The four continual-learning scenarios: what the learner is told and how labels are presented."""

from __future__ import annotations

from dataclasses import dataclass

from growsearch.errors import UnknownNameError


@dataclass(frozen=True)
class Scenario:
    """A scenario: whether the task id is known at training / inference, and the label convention.

    labels: "per-task" (each task's classes relabelled 0..k-1, one head per task), "shared" (one
    label set 0..k-1 shared by all tasks) or "disjoint" (global class index, one head over all classes).
    """

    name: str
    task_id_at_training: bool
    task_id_at_inference: bool
    labels: str


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("task-il", task_id_at_training=True, task_id_at_inference=True, labels="per-task"),
        Scenario("domain-il", task_id_at_training=True, task_id_at_inference=False, labels="shared"),
        Scenario("class-il", task_id_at_training=True, task_id_at_inference=False, labels="disjoint"),
        Scenario("task-agnostic", task_id_at_training=False, task_id_at_inference=False, labels="shared"),
    )
}


def get_scenario(name: str) -> Scenario:
    """The scenario called `name`; UnknownNameError if there is none."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UnknownNameError("scenario", name, tuple(SCENARIOS)) from None


# the scenarios a task-IL method also runs in, the task of a test sample inferred (growsearch.inference;
# task-agnostic: the tasks found in the stream too)
INFERABLE = ("class-il", "domain-il", "task-agnostic")
