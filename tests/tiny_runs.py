"""Tiny search spaces on the embedded split-digits stream, so every test runs the real code paths (real
Optuna storage in a temporary run folder) in a second or two."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from growsearch.config.space import SearchSpace, builtin_space_path, space_from_dict
from growsearch.runner import RunOptions

TINY_TRAINING = {"epochs": 2, "lr": 0.05, "batch_size": 32}


def tiny_space(method: str, **sections: Any) -> SearchSpace:
    """The shipped YAML of `method`, shrunk: two 16-unit layers, two epochs; `sections` override."""
    data = yaml.safe_load(builtin_space_path(method).read_text())
    data = copy.deepcopy(data)
    data["network"] = {"layers": [{"linear": 16}, {"linear": 16}]}
    data["training"] = {**data.get("training", {}), **TINY_TRAINING}
    for key, value in sections.items():
        if key == "network" and isinstance(value, dict) and "preset" in value:  # a backbone replaces layers
            data["network"] = dict(value)
            continue
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return space_from_dict(data, f"<tiny {method}>")


def tiny_options(seed: int = 0, **extra: Any) -> RunOptions:
    return RunOptions(benchmark="split-digits", n_tasks=None, max_per_task=80, seed=seed, **extra)


def start_cli_run(
    space: SearchSpace, run: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """A real `growsearch run` of `space` in its own process (to be killed), its folder at `run`."""
    config = run.parent / f"{run.name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(space.to_dict()))
    command = [
        sys.executable,
        "-m",
        "growsearch",
        "run",
        str(config),
        "--runs-dir",
        str(run.parent),
        "--name",
        run.name,
        *options,
    ]
    env = {**(env or os.environ), "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 180) -> None:
    """Poll `condition` while `process` runs; fail with its stderr if it ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, (
            f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
        )
        assert time.monotonic() < deadline, "the run did not reach the point to kill it"
        time.sleep(0.005)


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def assert_old_tasks_unchanged(run: Path, stream: Any) -> None:
    """Every task's test outputs under the final checkpoint equal, bit for bit, those at its own commit."""
    import torch

    from growsearch.graph.compile import compile_view
    from growsearch.store.run_folder import RunFolder

    folder = RunFolder.open(run)
    committed = folder.committed_tasks()
    final, _ = folder.load_task(committed[-1])
    for task in committed[:-1]:
        at_commit, _ = folder.load_task(task)
        x = stream.tasks[task].test.x
        assert torch.equal(compile_view(final, task).module(x), compile_view(at_commit, task).module(x)), task


def assert_same_commits(run: Any, reference: Any, task: int) -> None:
    """Two runs committed the same decisions and accuracies, and bit-identical weights up to `task`."""
    from growsearch.store.run_folder import RunFolder

    assert run.metrics["decisions"] == reference.metrics["decisions"]
    assert run.metrics["accuracy"] == reference.metrics["accuracy"]
    graph, _ = RunFolder.open(run.path).load_task(task)
    expected, _ = RunFolder.open(reference.path).load_task(task)
    assert list(graph) == list(expected)
    for node_id, node in graph.nodes():
        for name, value in node.weights.items():
            assert torch.equal(value, expected.node(node_id).weights[name]), (node_id, name)
