"""Every method survives kill -9: a real `growsearch run` is killed just after a task commits, resumed,
and commits the same graph, decisions and accuracies as an uninterrupted run with the same seed.
(MNTDP-D and RCL have their own, finer-grained kill tests.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from growsearch.runner import resume_run, start_run
from growsearch.search.run_folder import RunFolder

from tiny_runs import tiny_options, tiny_space

TINY = {
    "pnn": {},
    "packnet": {},
    "mntdp-s": {"options": {"sampler_epochs": 1}},
    "pathnet": {
        "options": {
            "modules_per_layer": 3,
            "active_per_layer": 2,
            "population": 4,
            "generations": 3,
            "minibatches": 3,
        }
    },
    "cleas": {"search": {"n_trials": 2}, "training": {"epochs": 1}},
    "den": {"options": {"stage_epochs": 1, "head_epochs": 1, "expand_units": 3}},
    "learn-to-grow": {"options": {"search_epochs": 1}},
}


@pytest.mark.parametrize("method", sorted(TINY))
def test_kill_minus_9_and_resume_commits_what_an_uninterrupted_run_commits(method, tmp_path):
    space = tiny_space(method, **TINY[method])
    config = tmp_path / "space.yaml"
    config.write_text(yaml.safe_dump(space.to_dict()))
    run = tmp_path / "runs" / "killed"
    command = [
        sys.executable,
        "-m",
        "growsearch",
        "run",
        str(config),
        "--max-per-task",
        "80",
        "--runs-dir",
        str(run.parent),
        "--name",
        run.name,
    ]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (run / "tasks" / "1").is_dir():  # kill in the middle of what follows task 1's commit
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the run never committed task 1"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()

    resumed = resume_run(run)
    reference = start_run(space, tiny_options(), tmp_path / "reference")

    assert resumed.metrics["decisions"] == reference.metrics["decisions"]
    assert resumed.metrics["accuracy"] == reference.metrics["accuracy"]
    final, _ = RunFolder.open(run).load_task(4)
    expected, _ = RunFolder.open(reference.path).load_task(4)
    assert list(final) == list(expected)
    for node_id, node in final.nodes():
        for name, value in node.weights.items():
            assert torch.equal(value, expected.node(node_id).weights[name]), (node_id, name)
