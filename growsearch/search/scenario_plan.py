"""The scenario plan: what a run's scenario means for it, resolved once from the YAML and the command line.

Which stream the method trains on, whether the task id is given, how a test sample's task is inferred
where it is not, whose labels a task's samples carry, and what each accuracy row scores: the runner
resolves it (`resolve_plan`) before anything is written, and the pipeline, the evaluation, the task
services and the command line read it. No other module decides a scenario rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from growsearch.config.space import InferenceConfig, SearchSpace
from growsearch.data.scenarios import INFERABLE, get_scenario
from growsearch.errors import ConfigError, ScenarioError
from growsearch.methods.registry import get_method

Inference = Literal["oracle", "autoencoders", "task-classifier", "method"]


@dataclass(frozen=True)
class ScenarioPlan:
    scenario: str  # the scenario the run is scored in
    trains_in: str  # the scenario of the stream the method trains on (task-il where the task is inferred)
    finds_tasks: bool  # no boundaries given (task-agnostic): the tasks are found in one stream
    # how a test sample's task is known: given ("oracle"), picked by the task-inference autoencoders or by
    # the task classifier over an exemplar memory, or inferred by the method itself (`Method.infer_task`)
    inference: Inference
    shared_labels: bool  # with the task inferred: every task has the same labels (domain-IL, task-agnostic)
    single_head: bool  # the newest task's head scores every task (a class-IL method's one classifier)
    # the settings of a task-inference autoencoder trained for each task (where they infer the task, or the
    # method reads them); None: none is trained
    autoencoders: InferenceConfig | None
    method: str
    # the settings of the task classifier trained for each task (where it infers the task); None: none is
    # trained
    task_classifier: InferenceConfig | None = None

    @property
    def infers_task(self) -> bool:
        return self.inference != "oracle"

    @property
    def task_inference(self) -> str | None:
        """What a task record names as having inferred the task (None: it was given)."""
        if self.inference == "oracle":
            return None
        if self.inference == "method":
            return self.method
        return "task-classifier" if self.inference == "task-classifier" else "expert-gate"

    @property
    def note(self) -> str | None:
        """The line a run prints when it infers the task (None when the task id is given)."""
        if not self.infers_task:
            return None
        picker = {
            "method": f"method {self.method} itself",
            "task-classifier": "the task classifier",
        }.get(self.inference, "ExpertGate's gate")
        if self.finds_tasks:
            return (
                f"task inference: {self.scenario} gives no task boundaries and no task id; ExpertGate's "
                "autoencoders find where each task begins (the samples stop resembling the current task's), "
                f"and {picker} picks each test sample's task; a sample counts whichever task's head names "
                "its label"
            )
        if self.inference == "method":
            return (
                f"task inference: {self.scenario} does not give the task id at test time; method "
                f"{self.method} infers it itself, and tasks are scored {self.scenario}"
            )
        kind = self.task_inference
        if get_scenario(self.scenario).task_id_at_inference:
            return (
                f"task inference: {self.scenario} gives the task id at test time, but the YAML asks for "
                f"{picker} (inference: {kind}): it picks each test sample's task, and a sample "
                "counts when sent to its own task and right there"
            )
        if self.inference == "task-classifier":
            memory = self.task_classifier.memory if self.task_classifier else 0
            return (
                f"task inference: {self.scenario} does not give the task id at test time; a task "
                "classifier, trained as each task is learnt on its samples and an exemplar memory of the "
                f"earlier tasks' ({memory} samples in all), picks it, and tasks are scored {self.scenario} "
                "(inference: task-classifier)"
            )
        return (
            f"task inference: {self.scenario} does not give the task id at test time; ExpertGate's gate (an "
            f"autoencoder per task) picks it, and tasks are scored {self.scenario} (inference: expert-gate)"
        )


def resolve_plan(space: SearchSpace, scenario_name: str) -> ScenarioPlan:
    """The plan for running `space`'s method in the scenario `scenario_name`. `inference: auto` infers the
    task where the scenario hides it and the method does not run there itself; an explicit kind the
    scenario cannot honour is refused, as is a scenario neither the method nor task inference supports."""
    method = get_method(space.method)
    scenario = get_scenario(scenario_name)
    kind = space.inference.kind
    native = scenario.task_id_at_inference or scenario.name in method.scenarios
    if native:
        inferred = kind in ("expert-gate", "task-classifier")
    else:
        if not ("task-il" in method.scenarios and scenario.name in INFERABLE):
            also = (
                f" (and {', '.join(INFERABLE)}, inferring the task)" if "task-il" in method.scenarios else ""
            )
            raise ScenarioError(
                f"method {space.method} supports the scenarios {', '.join(method.scenarios)}{also}; "
                f"the run was asked for {scenario.name}"
            )
        if kind == "oracle":
            raise ConfigError(
                f"{space.source}: inference.kind: {scenario.name} hides the task id at test time, so the "
                "oracle cannot be used; expected auto, expert-gate or task-classifier"
            )
        inferred = True
    inference: Inference = "oracle"
    if inferred:
        inference = _picker(kind, scenario.name, method.infers_task)
    inferred_here = inferred and scenario.name not in method.scenarios
    trains_in = scenario.name
    if inferred_here and scenario.task_id_at_training:
        trains_in = "task-il"  # a task-IL method learns each task with its own labels and head
    reads = method.reads_autoencoders
    autoencoders = space.inference if inference == "autoencoders" or reads else None
    return ScenarioPlan(
        scenario=scenario.name,
        trains_in=trains_in,
        finds_tasks=inferred_here and not scenario.task_id_at_training,
        inference=inference,
        shared_labels=scenario.labels == "shared",
        single_head=method.single_head,
        autoencoders=autoencoders,
        method=space.method,
        task_classifier=space.inference if inference == "task-classifier" else None,
    )


def _picker(kind: str, scenario: str, method_infers: bool) -> Inference:
    """What picks a test sample's task where it is inferred: the method where it infers it itself, else the
    kind the YAML names; `auto`: the task classifier in class-IL (the gate on raw pixels routes
    split-mnist5k's last task right 0.47 of the time), the gate elsewhere (domain-IL's permutations it
    tells apart; task-agnostic finds its tasks with the same autoencoders)."""
    if method_infers:
        return "method"
    if kind == "task-classifier" or (kind == "auto" and scenario == "class-il"):
        return "task-classifier"
    return "autoencoders"


def scenarios_shown(scenarios: tuple[str, ...]) -> str:
    """A method's scenarios, with those it runs through task inference where it is task-IL."""
    shown = list(scenarios)
    if "task-il" in scenarios:
        shown += [f"{s} (task inferred)" for s in INFERABLE if s not in scenarios]
    return ", ".join(shown)
