"""The task classifier over an exemplar memory (class-IL's default task inference): on real digits it routes
held-out samples to their task where ExpertGate's raw-pixel autoencoders cannot, it keeps its memory
within the budget it is given, the run folder holds it (and reproduces the routing the record names), the
record says what it costs, and it leaves what the method commits untouched."""

from __future__ import annotations

import pytest
import torch

from growsearch.config.space import InferenceConfig, space_from_dict
from growsearch.errors import ConfigError
from growsearch.inference.task_classifier import TaskClassifier, learn_task
from growsearch.runner import RunOptions, load_stream, resume_run, scenario_plan, start_run
from growsearch.search.pipeline import SilentReporter
from growsearch.search.task_services import TASK_CLASSIFIER_FILE
from growsearch.store.run_folder import AUTOENCODER_FILE, RunFolder

from tiny_runs import assert_same_commits, tiny_space

# split-mnist5k's real digits, 200 training samples a task: ExpertGate's gate on their raw pixels
# routes the last task's held-out samples right 0.55 to 0.69 of the time and all tasks' 0.75 to 0.76 (seeds
# 0 to 3), the task classifier 0.81 to 0.87 and 0.87 to 0.89
MNIST = {"benchmark": "split-mnist5k", "max_per_task": 200, "seed": 0}


@pytest.fixture(scope="module")
def class_il_run(tmp_path_factory, one_thread):
    options = RunOptions(scenario="class-il", **MNIST)
    return start_run(tiny_space("pnn"), options, tmp_path_factory.mktemp("tc") / "run")


def test_class_il_routes_real_digits_by_the_task_classifier(class_il_run):
    """What the default class-IL run of a task-IL method infers the task with: the last task's digits go to
    it well above what the raw-pixel gate manages (0.55), and every task's about as well."""
    assert "task classifier" in scenario_plan(tiny_space("pnn"), RunOptions(scenario="class-il")).note
    final = class_il_run.records[-1]
    assert final.task_inference == "task-classifier"
    routed = final.task_inference_row
    assert routed[-1] > 0.75, routed
    assert sum(routed) / len(routed) > 0.84, routed
    for j, (class_il, task_il) in enumerate(zip(final.accuracy_row, final.task_il_accuracy_row, strict=True)):
        assert class_il <= min(task_il, routed[j]) + 1e-9  # right only where routed right and right there


def test_the_run_folder_holds_the_classifier_that_routed_and_the_record_its_cost(class_il_run):
    run = RunFolder.open(class_il_run.path)
    stream_tasks = _stream().tasks
    for record in class_il_run.records:
        t = record.task
        assert not (run.task_dir(t) / AUTOENCODER_FILE).exists()  # no gate trained beside it
        classifier = TaskClassifier.from_tensors(run.load_task_tensors(t, TASK_CLASSIFIER_FILE))
        assert classifier.n_tasks == t + 1
        routed = [
            float((classifier.route(task.test.x) == j).double().mean()) for j, task in enumerate(stream_tasks)
        ]
        assert routed[: t + 1] == record.task_inference_row[: t + 1]
        samples, tasks, _ = classifier.memory.samples()
        assert record.mechanism["task_classifier"] == {
            "parameters": sum(p.numel() for p in classifier.network.parameters()),
            "memory_samples": len(samples),
            "memory_bytes": 4 * samples.numel(),
            "memory_capacity": 1000,
        }
        # 1000 in all holds every training sample of these tasks (200 each)
        assert torch.bincount(tasks).tolist() == [len(task.train) for task in stream_tasks[: t + 1]]


def test_class_il_commits_what_task_il_commits(class_il_run, tmp_path, one_thread):
    """The task classifier trains beside the method, its random state its own: the class-IL run's graphs
    are those of the task-IL run, weight for weight."""
    task_il = start_run(tiny_space("pnn"), RunOptions(scenario="task-il", **MNIST), tmp_path / "til")
    assert task_il.records[-1].task_inference is None
    assert not (task_il.path / "tasks" / "4" / TASK_CLASSIFIER_FILE).exists()
    assert [r.task_il_accuracy_row for r in class_il_run.records] == [r.accuracy_row for r in task_il.records]
    graph, _ = RunFolder.open(class_il_run.path).load_task(4)
    expected, _ = RunFolder.open(task_il.path).load_task(4)
    for node_id, node in graph.nodes():
        for name, value in node.weights.items():
            assert torch.equal(value, expected.node(node_id).weights[name]), (node_id, name)


def test_an_interrupted_run_resumes_with_its_task_classifier(tmp_path, one_thread):
    class StopAfterTaskOne(SilentReporter):
        def task_committed(self, task, record):
            if task == 1:
                raise KeyboardInterrupt

    options = RunOptions(benchmark="split-digits", scenario="class-il", max_per_task=80, seed=0)
    whole = start_run(tiny_space("pnn"), options, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        start_run(tiny_space("pnn"), options, tmp_path / "run", reporter=StopAfterTaskOne())
    resumed = resume_run(tmp_path / "run")
    assert_same_commits(resumed, whole, 4)
    assert [r.task_inference_row for r in resumed.records] == [r.task_inference_row for r in whole.records]
    assert [r.mechanism for r in resumed.records] == [r.mechanism for r in whole.records]


def test_the_memory_stays_within_its_budget_shared_equally_and_earlier_classifiers_stay_whole(digits_stream):
    config = InferenceConfig(memory=50, classifier_epochs=2)
    assert min(len(task.train) for task in digits_stream.tasks) >= 50
    classifiers: list[TaskClassifier] = []
    for t, task in enumerate(digits_stream.tasks):
        previous = classifiers[-1] if classifiers else None
        classifiers.append(learn_task(previous, t, task.train.x, config, seed=t))
    counts = [torch.bincount(c.memory.samples()[1]).tolist() for c in classifiers]
    assert counts == [[50 // n] * n for n in range(1, 6)]  # 50, then 25 a task, ... 10 a task
    kept = classifiers[-1].memory.x[0]
    assert torch.equal(kept, classifiers[0].memory.x[0][: len(kept)])  # a shrunk task keeps a prefix
    assert [c.cost()["memory_samples"] for c in classifiers] == [50, 50, 48, 48, 50]
    again = TaskClassifier.from_tensors(classifiers[2].tensors())
    x = digits_stream.tasks[1].test.x
    assert torch.equal(again.route(x), classifiers[2].route(x))


def test_a_memory_too_small_for_the_tasks_is_refused_by_name(digits_stream):
    config = InferenceConfig(memory=1, classifier_epochs=1)
    first = learn_task(None, 0, digits_stream.tasks[0].train.x, config, seed=0)
    with pytest.raises(
        ConfigError, match="inference.memory: 1 exemplars cannot hold one sample of each of 2"
    ):
        learn_task(first, 1, digits_stream.tasks[1].train.x, config, seed=1)
    data = {"method": "pnn", "network": {"layers": [{"linear": 8}]}, "inference": {"memory": 0}}
    with pytest.raises(ConfigError, match=r"inference.memory: expected an integer >= 1, got 0"):
        space_from_dict(data, "<test>")


def _stream():
    return load_stream(RunOptions(scenario="class-il", **MNIST))  # the stream the run loaded
