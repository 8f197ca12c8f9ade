"""SIGINT and SIGTERM at any moment of a real `growsearch run`: one line, exit 130 or 143, and a hint that
works (resume, which then commits what an uninterrupted run commits, or run again, or nothing to do)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from growsearch.config.run_options import RunOptions
from growsearch.config.space import load_space
from growsearch.runner import resume_run, start_run

from tiny_runs import tiny_space

ROOT = Path(__file__).parents[2]
ARGS = ["--tasks", "2", "--max-per-task", "40"]
MOMENTS = 20


def _start(config: Path, run: Path, log: Path) -> subprocess.Popen:
    """The run in its own process group (as a shell starts a job), so a signal reaches it as Ctrl-C does."""
    command = [sys.executable, "-m", "growsearch", "run", str(config), *ARGS]
    command += ["--runs-dir", str(run.parent), "--name", run.name]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.PIPE, text=True, start_new_session=True
        )


def _handles_signals(pid: int) -> bool:
    """Whether the process catches SIGTERM yet: growsearch's first line has run. (Before it, a signal meets
    the interpreter's own start-up, as it would any Python program.)"""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return True  # gone already
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def _assert_same_run(run: Path, reference: Path) -> None:
    ours, theirs = (json.loads((p / "metrics.json").read_text()) for p in (run, reference))
    for key in ("tasks_committed", "accuracy", "decisions", "parameters", "metrics"):
        assert ours[key] == theirs[key], key
    for task in range(2):
        folder, expected = run / "tasks" / str(task), reference / "tasks" / str(task)
        assert (folder / "graph.json").read_bytes() == (expected / "graph.json").read_bytes(), task
        weights, others = (
            load_file(folder / "weights.safetensors"),
            load_file(expected / "weights.safetensors"),
        )
        assert weights.keys() == others.keys() and all(torch.equal(weights[k], others[k]) for k in weights)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    # PNN: one trial a task, so no signal lands between the records of a pack of trials (a kill there
    # leaves a trial whose pack layout is unrecorded, and its retry trains in another layout: a known gap of
    # the search's retries, not of the command line)
    path = tmp_path_factory.mktemp("signals") / "pnn.yaml"
    path.write_text(yaml.safe_dump(tiny_space("pnn", training={"epochs": 3}).to_dict()))
    return path


@pytest.fixture(scope="module")
def reference(config) -> tuple[Path, float]:
    """One uninterrupted run, and how long it took: the span the moments are drawn from."""
    run = config.parent / "reference"
    started = time.monotonic()
    process = _start(config, run, config.parent / "reference.log")
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0 and not stderr.strip(), stderr
    return run, time.monotonic() - started


def test_a_signal_at_any_moment_is_one_line_and_a_hint_that_works(config, reference, tmp_path, one_thread):
    reference_run, span = reference
    draw = random.Random(24)
    seen = set()
    for moment in range(MOMENTS):
        number = (signal.SIGINT, signal.SIGTERM)[moment % 2]
        delay = draw.uniform(0, span)
        run = tmp_path / f"run{moment}"
        process = _start(config, run, tmp_path / f"run{moment}.log")
        while not _handles_signals(process.pid):
            time.sleep(0.001)
        time.sleep(delay)
        try:
            os.killpg(process.pid, number)
        except ProcessLookupError:
            pass
        _, stderr = process.communicate(timeout=300)
        lines = stderr.strip().splitlines()
        what = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}[number]
        context = (moment, number.name, round(delay, 3), process.returncode, lines)
        if process.returncode == 0:  # the signal came after the process had done everything
            assert not lines and "run folder:" in (tmp_path / f"run{moment}.log").read_text(), context
            _assert_same_run(run, reference_run)
            seen.add("complete")
            continue
        assert process.returncode == 128 + number and len(lines) == 1, context
        line = lines[0]
        assert line.startswith(what) and "Traceback" not in stderr, context
        if f"resume with `growsearch resume {run}`" in line:
            resume_run(run)
            _assert_same_run(run, reference_run)
            seen.add("resumed")
        elif "nothing to resume; run the same command again" in line:
            assert not (run / "config.yaml").exists() and not run.exists(), context  # the name is free
            seen.add("before the folder")
        elif "after the command had finished" in line or "holds all 2 tasks; nothing to resume" in line:
            _assert_same_run(run, reference_run)
            seen.add("after the results")
        else:
            assert line in (
                f"{what}: nothing was written",
                f"{what} before the command started: nothing was written",
            )
            assert not run.exists(), context
            seen.add("before the run")
        shutil.rmtree(run, ignore_errors=True)
    print("moments:", sorted(seen))
    assert "resumed" in seen, seen  # the draws reached the middle of the run


def test_the_hint_of_a_signal_before_the_folder_holds_a_run_works(config, reference, tmp_path, one_thread):
    """`run the same command again`: the name is free, and the run then is the uninterrupted one."""
    reference_run, _ = reference
    run = tmp_path / "again"
    run.mkdir()
    (run / ".lock").write_text("")  # what a Ctrl-C inside RunFolder.create can leave at most
    options = RunOptions(benchmark="split-digits", n_tasks=2, max_per_task=40)
    start_run(load_space(config), options, run)
    _assert_same_run(run, reference_run)


@pytest.mark.parametrize(
    ("state", "number", "expected"),
    [
        (
            {"parsing": False},
            signal.SIGINT,
            (130, "interrupted before the command started: nothing was written"),
        ),
        (
            {"parsing": True, "finished": 0},
            signal.SIGTERM,
            (143, "terminated after the command had finished"),
        ),
        ({"parsing": True, "finished": 2}, signal.SIGINT, (2, None)),  # it failed, and said why: no 2nd line
        (
            {"parsing": True, "received": signal.SIGTERM},
            signal.SIGINT,
            (143, "terminated: nothing was written"),
        ),
    ],
)
def test_a_signal_outside_a_running_command_stops_at_once_with_one_line(monkeypatch, state, number, expected):
    """Before the command (imports), after it (results printed, the interpreter's exit) and a second signal
    while the first unwinds: the process stops at once, exit 128 + the signal (or the failed command's
    code), one line at most."""
    from growsearch.cli import _Signals

    signals = _Signals()
    for key, value in state.items():
        setattr(signals, key, value)
    stops = []

    def stop(code, line):
        stops.append((code, line))
        raise SystemExit(code)

    monkeypatch.setattr(signals, "stop", stop)
    monkeypatch.setattr("growsearch.cli.SIGNALS", signals)
    with pytest.raises(SystemExit):
        signals.handle(number, None)
    code, line = stops[0]
    assert code == expected[0] and (line is None if expected[1] is None else line.startswith(expected[1]))
