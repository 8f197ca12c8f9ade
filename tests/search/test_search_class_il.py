"""A task-IL method in class-IL with ExpertGate's gate (`inference.kind: expert-gate`; class-IL's default
is the task classifier, tests/inference/test_task_classifier.py): the run says it infers the task, trains
the gate per task beside the method, scores every task class-IL (the task inferred) with the task-IL score
and the gate's routing accuracy beside it, keeps each gate in the task's checkpoint, and resumes with
them."""

from __future__ import annotations

import json
import shutil

import optuna
import pytest
from torch import nn

from growsearch.data import load_benchmark
from growsearch.errors import CheckpointError, ConfigError, ScenarioError
from growsearch.report.html_report import write_report
from growsearch.runner import RunOptions, resume_run, scenario_plan, start_run
from growsearch.search.pipeline import SilentReporter
from growsearch.store.run_folder import AUTOENCODER_FILE, RunFolder
from growsearch.train.module_macs import module_macs
from growsearch.trial_record import counts_toward_budget, spent_macs

from tiny_runs import assert_same_commits, tiny_space


def class_il(**extra) -> RunOptions:
    return RunOptions(benchmark="split-digits", scenario="class-il", max_per_task=80, seed=0, **extra)


def gated_pnn():
    return tiny_space("pnn", inference={"kind": "expert-gate"})


@pytest.fixture(scope="module")
def pnn_class_il(tmp_path_factory):
    return start_run(gated_pnn(), class_il(), tmp_path_factory.mktemp("cil") / "run")


def test_a_task_il_method_runs_class_il_with_the_task_inferred(pnn_class_il):
    assert "ExpertGate" in scenario_plan(gated_pnn(), class_il()).note
    for record in pnn_class_il.records:
        t = record.task
        assert record.task_inference == "expert-gate"
        assert (pnn_class_il.path / "tasks" / str(t) / AUTOENCODER_FILE).is_file()
        class_il_row, task_il_row = record.accuracy_row, record.task_il_accuracy_row
        routed = record.task_inference_row
        for j in range(t + 1):  # right only when routed to its own task and right there
            assert 0 <= class_il_row[j] <= min(task_il_row[j], routed[j]) + 1e-9
        assert all(a == 0.0 for a in class_il_row[t + 1 :])  # no gate can pick a task not yet learned
    final = pnn_class_il.records[-1]
    assert sum(final.task_inference_row) / 5 > 0.6  # the gate routes well above chance (0.2)
    assert pnn_class_il.metrics["metrics"]["average_accuracy"] == pytest.approx(sum(final.accuracy_row) / 5)


def test_training_the_gates_counts_in_each_tasks_compute(pnn_class_il):
    """CE counts what the run trains beside the network: each task's autoencoder, forward and backward over
    its training inputs for the gate's epochs, in the task's train_macs and apart as inference_macs."""
    stream = load_benchmark("split-digits", scenario="class-il", max_per_task=80, seed=0)
    config = gated_pnn().inference
    storage = RunFolder.open(pnn_class_il.path).storage()
    for record in pnn_class_il.records:
        train = stream.tasks[record.task].train
        features = train.x[0].numel()
        code = min(config.code_size, features)
        per_sample = module_macs(nn.Sequential(nn.Linear(features, code), nn.Linear(code, features)))
        assert record.inference_macs == 3 * per_sample * len(train) * config.epochs
        study = optuna.load_study(study_name=f"task-{record.task}", storage=storage)
        trials = sum(spent_macs(t) for t in study.get_trials() if counts_toward_budget(t))
        assert record.train_macs == trials + record.inference_macs  # PNN's commit trains nothing


def test_an_interrupted_class_il_run_resumes_with_its_gates(pnn_class_il, tmp_path):
    class StopAfterTaskOne(SilentReporter):
        def task_committed(self, task, record):
            if task == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start_run(gated_pnn(), class_il(), tmp_path / "run", reporter=StopAfterTaskOne())
    said = []
    resumed = resume_run(tmp_path / "run", announce=said.append)
    assert said == ["2 task(s) committed (0..1) with their task-inference autoencoders; task 2 starts afresh"]
    assert_same_commits(resumed, pnn_class_il, 4)
    assert [r.task_inference_row for r in resumed.records] == [
        r.task_inference_row for r in pnn_class_il.records
    ]


def test_a_torn_gate_is_refused_on_resume(pnn_class_il, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(pnn_class_il.path, run)
    gate = run / "tasks" / "1" / AUTOENCODER_FILE
    gate.write_bytes(gate.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="gate.safetensors does not match its checksum"):
        resume_run(run)


def test_what_the_scenario_cannot_honour_is_refused_by_name():
    oracle = tiny_space("pnn", inference={"kind": "oracle"})
    with pytest.raises(
        ConfigError,
        match="inference.kind: class-il hides the task id.*expected auto, expert-gate or task-classifier",
    ):
        start_run(oracle, class_il(), None)
    with pytest.raises(ScenarioError, match=r"method der supports the scenarios class-il; .* task-il"):
        start_run(tiny_space("der"), RunOptions(benchmark="split-digits", scenario="task-il"), None)


def test_metrics_and_report_show_the_task_inference(pnn_class_il):
    metrics = json.loads((pnn_class_il.path / "metrics.json").read_text())
    assert metrics["task_inference"] == "expert-gate"
    assert metrics["task_inference_accuracy"][-1] == pnn_class_il.records[-1].task_inference_row
    assert metrics["task_il_accuracy"][-1] == pnn_class_il.records[-1].task_il_accuracy_row
    write_report(pnn_class_il.path, engine="matplotlib")
    page = (pnn_class_il.path / "report.html").read_text()
    assert "Task inference" in page and "routed to it" in page
    last = pnn_class_il.records[-1]  # the task table shows what training the gate cost, within train MACs
    assert f"{last.train_macs:,} (task inference {last.inference_macs:,})" in page


def test_a_task_il_method_runs_domain_il_with_the_task_inferred(tmp_path):
    """Domain-IL (permuted digits, the same ten labels in every task): the gate picks a head and that head
    names the label, so a sample counts whichever task's head names it, and tasks not yet learned are
    scored too (class-IL scores them 0)."""
    options = RunOptions(benchmark="permuted-digits", scenario="domain-il", n_tasks=3, max_per_task=200)
    space = tiny_space("pnn", training={"epochs": 10, "lr": 0.1})
    assert "scored domain-il" in scenario_plan(space, options).note
    result = start_run(space, options, tmp_path / "run")
    first, last = result.records[0], result.records[-1]
    assert first.task_inference == "expert-gate"
    assert first.task_inference_row == [1.0, 0.0, 0.0]  # one gate: everything goes to task 0's head
    assert all(0 < a < 0.3 for a in first.accuracy_row[1:])  # scored: near chance through that head
    assert last.task_inference_row == [1.0, 1.0, 1.0]  # permutations are told apart
    assert last.accuracy_row == last.task_il_accuracy_row  # routed right: as if the task were given
    assert min(last.accuracy_row) > 0.5
