"""RCL end to end on split digits: the sampled units are grown, old tasks never change, and a run killed
with SIGKILL and resumed commits what an uninterrupted run commits (the REINFORCE policy is replayed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.runner import RunOptions, resume_run, start_run
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import read_record

from tiny_runs import tiny_options, tiny_space

SEARCH = {"n_trials": 3, "storage": "journal"}


@pytest.fixture(scope="module")
def rcl_run(tmp_path_factory):
    space = tiny_space("rcl", search=SEARCH, training={"epochs": 1})
    return start_run(space, tiny_options(), tmp_path_factory.mktemp("rcl") / "run")


def logits(graph: ModuleGraph, task: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return compile_view(graph, task).module.eval()(x)


def test_each_task_grows_the_units_the_policy_sampled(rcl_run):
    run = RunFolder.open(rcl_run.path)
    final, _ = run.load_task(4)
    storage = run.storage("journal")
    assert rcl_run.records[0].decisions == {}  # the first task trains the base network
    assert [final.node(f"t0/L{i}").spec.out_features for i in range(2)] == [16, 16]
    for record in rcl_run.records[1:]:
        task, added = record.task, record.decisions["add_units"]
        assert len(added) == 2 and all(0 <= n < 30 for n in added)
        for layer, n in enumerate(added):
            node_id = f"t{task}/L{layer}"
            assert (final.node(node_id).spec.out_features if node_id in final else 0) == n
        top = 16 + sum(r.decisions["add_units"][1] for r in rcl_run.records[1 : task + 1])
        assert final.node(f"t{task}/head").spec.in_features == top  # the head reads every top-layer unit
        study = optuna.load_study(study_name=f"task-{task}", storage=storage)
        trials = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(trials) == 3

        def reward(t):
            return t.value - 1e-4 * (t.params["add_units_L0"] + t.params["add_units_L1"])

        best = max(trials, key=lambda t: (reward(t), -t.number))  # the paper keeps the best reward
        assert record.chosen_trial == best.number and record.val_accuracy == best.value
        for t in trials:
            units = t.params["add_units_L0"] + t.params["add_units_L1"]
            assert read_record(t).mechanism["complexity_penalty"] == pytest.approx(1e-4 * units)


def test_old_tasks_outputs_and_weights_stay_bit_identical(rcl_run, digits_stream):
    run = RunFolder.open(rcl_run.path)
    final, _ = run.load_task(4)
    for task in range(4):
        committed, _ = run.load_task(task)
        x = digits_stream.tasks[task].test.x
        assert torch.equal(logits(committed, task, x), logits(final, task, x))
        for node_id, node in committed.nodes():
            assert final.node(node_id).frozen or node_id == "input"
            for name, value in node.weights.items():
                assert torch.equal(value, final.node(node_id).weights[name]), (node_id, name)
        column = [row[task] for row in rcl_run.metrics["accuracy"][task:]]
        assert column == [column[0]] * len(column)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()}"
        assert time.monotonic() < deadline, "the run did not reach the point to kill it"
        time.sleep(0.005)


def _completed(run: Path, task: int, number: int) -> bool:
    storage = JournalStorage(JournalFileBackend(str(run / "study.journal")))
    study = optuna.load_study(study_name=f"task-{task}", storage=storage)
    return any(
        t.number == number and t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)
    )


def _architectures(path: Path) -> list[dict]:
    study = optuna.load_study(study_name="task-1", storage=RunFolder.open(path).storage("journal"))
    return [t.params for t in study.get_trials(states=(TrialState.COMPLETE,))]


def test_sigkill_mid_task_then_resume_commits_what_an_uninterrupted_run_commits(tmp_path):
    space = tiny_space("rcl", search=SEARCH, training={"epochs": 1})
    config = tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump(space.to_dict()))
    run = tmp_path / "runs" / "killed"
    command = [sys.executable, "-m", "growsearch", "run", str(config), "--tasks", "2", "--max-per-task", "80"]
    command += ["--runs-dir", str(tmp_path / "runs"), "--name", "killed"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    # kill during task 1's last architecture, once trial 1 is complete: the policy has learned from
    # trials 0 and 1. (Killed earlier, later trials would get new numbers and so new training seeds.)
    _wait_for(lambda: (run / "trials" / "1" / "1" / "checksums.json").exists(), process)
    _wait_for(lambda: _completed(run, task=1, number=1), process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (run / "tasks" / "1").exists()

    resumed = resume_run(run)
    options = RunOptions(**RunFolder.open(run).config()["run"])
    reference = start_run(space, options, tmp_path / "reference")
    # every architecture of the interrupted task was sampled as in the uninterrupted run
    assert _architectures(run) == _architectures(reference.path)
    assert resumed.metrics["decisions"] == reference.metrics["decisions"]
    assert resumed.metrics["accuracy"] == reference.metrics["accuracy"]
    ours, _ = RunFolder.open(run).load_task(1)
    theirs, _ = RunFolder.open(reference.path).load_task(1)
    assert sorted(n for n, _ in ours.nodes()) == sorted(n for n, _ in theirs.nodes())
    for node_id, node in ours.nodes():
        for name, value in node.weights.items():
            assert torch.equal(value, theirs.node(node_id).weights[name]), (node_id, name)
