"""Ctrl-C is as exact as kill -9: a real `growsearch run` interrupted with SIGINT prints one line and exits
130; `resume` retries the interrupted trial with its seed and commits what an uninterrupted run commits."""

from __future__ import annotations

import dataclasses
import signal

import optuna
import pytest
import torch

from growsearch.runner import resume_run, start_run
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import is_interrupted, retry_of

from tiny_runs import start_cli_run, tiny_options, tiny_space, wait_for

SPACES = {
    "pnn": {"training": {"epochs": 40}},  # trials long enough to be caught mid-trial
    "rcl": {"search": {"n_trials": 3}, "training": {"epochs": 8}},
}


def _trial_started(run, task: int) -> bool:
    try:
        study = optuna.load_study(study_name=f"task-{task}", storage=RunFolder.open(run).storage())
    except (KeyError, Exception):
        return False
    return any(t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials(deepcopy=False))


@pytest.mark.parametrize("method", sorted(SPACES))
def test_sigint_then_resume_commits_what_an_uninterrupted_run_commits(method, tmp_path):
    space = tiny_space(method, **SPACES[method])
    run = tmp_path / "runs" / "interrupted"
    process = start_cli_run(space, run, "--max-per-task", "80", "--tasks", "2")
    wait_for(lambda: (run / "tasks" / "0").is_dir() and _trial_started(run, 1), process)
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=120)
    stderr = process.stderr.read()
    assert code == 130, stderr
    assert stderr.strip().splitlines() == [
        f"interrupted: 1 task(s) committed; resume with `growsearch resume {run}`"
    ], stderr
    study = optuna.load_study(study_name="task-1", storage=RunFolder.open(run).storage())
    states = [(t.state, t.user_attrs) for t in study.get_trials()]
    assert any(is_interrupted(t) or t.state == optuna.trial.TrialState.RUNNING for t in study.get_trials()), (
        states
    )

    resumed = resume_run(run)
    reference = start_run(space, dataclasses.replace(tiny_options(), n_tasks=2), tmp_path / "reference")
    trials = optuna.load_study(study_name="task-1", storage=RunFolder.open(run).storage()).get_trials()
    assert any(retry_of(t) is not None and t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert resumed.metrics["decisions"] == reference.metrics["decisions"]
    assert resumed.metrics["accuracy"] == reference.metrics["accuracy"]
    ours, _ = RunFolder.open(run).load_task(1)
    theirs, _ = RunFolder.open(reference.path).load_task(1)
    for node_id, node in ours.nodes():
        for name, value in node.weights.items():
            assert torch.equal(value, theirs.node(node_id).weights[name]), (node_id, name)
