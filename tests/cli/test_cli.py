"""The command line as a user meets it: one-line errors, progress, inspect, report, list."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from growsearch import cli
from growsearch.cli import app

from tiny_runs import tiny_space

runner = CliRunner()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "packnet.yaml"
    config.write_text(yaml.safe_dump(tiny_space("packnet", training={"epochs": 1}).to_dict()))
    result = runner.invoke(
        app, ["run", str(config), "--max-per-task", "60", "--runs-dir", str(root), "--name", "r"]
    )
    assert result.exit_code == 0, result.output
    return root / "r", result.output


def test_run_prints_progress_commits_and_every_metric(finished_run):
    _, output = finished_run
    for task in range(5):
        assert f"task {task} committed" in output
    for metric in ("A_T", "F_T", "FWT", "BWT", "MS", "CE"):
        assert metric in output


def test_inspect_shows_owned_shared_frozen_and_pruned(finished_run):
    run, _ = finished_run
    result = runner.invoke(app, ["inspect", str(run), "--task", "2"])
    assert result.exit_code == 0, result.output
    assert "t2/head" in result.output and "owned; frozen" in result.output
    assert "shared from task 0; trainable" in result.output and "free/pruned" in result.output
    dot = runner.invoke(app, ["inspect", str(run), "--task", "2", "--format", "dot"])
    assert dot.output.startswith('digraph "task 2"') and '"shared/L1" -> "t2/head";' in dot.output


def test_report_draws_the_figures(finished_run):
    run, _ = finished_run
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    for name in ("accuracy_matrix.png", "parameter_growth.png", "trial_history.png"):
        assert (run / name).read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("what", ["methods", "benchmarks", "scenarios"])
def test_list(what):
    result = runner.invoke(app, ["list", what])
    assert result.exit_code == 0
    expected = {"methods": "mntdp-d", "benchmarks": "split-mnist5k", "scenarios": "class-il"}[what]
    assert expected in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nosuch"], "unknown method 'nosuch'"),
        (["run", "pnn", "--benchmark", "split-mnist", "--data-root", "/nonexistent"], "/nonexistent"),
        (["run", "pnn", "--benchmark", "nope"], "unknown benchmark 'nope'"),
        (["run", "der", "--scenario", "task-il"], "supports the scenarios class-il"),
        (["resume", "/nonexistent/run"], "is not a run folder"),
        (["inspect", "/nonexistent/run"], "is not a run folder"),
        (["list", "colours"], "unknown list 'colours'"),
    ],
)
def test_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "growsearch",
            *args,
            *(["--runs-dir", str(tmp_path)] if args[0] == "run" else []),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2, process.stderr
    assert message in process.stderr
    assert "Traceback" not in process.stderr and len(process.stderr.strip().splitlines()) <= 2


def test_inspect_refuses_a_torn_checkpoint(finished_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished_run[0], run)
    weights = run / "tasks" / "1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = runner.invoke(app, ["inspect", str(run), "--task", "1"])
    assert result.exit_code == 2 and "does not match its checksum" in result.output


def test_list_methods_shows_class_il_through_task_inference(monkeypatch):
    # rich fixes a console's width when it is made (pytest-xdist's workers set COLUMNS=80): widen it here
    monkeypatch.setattr(cli.console, "_width", 320)
    result = runner.invoke(app, ["list", "methods"])
    assert result.exit_code == 0
    assert "task-il, class-il (task inferred), domain-il (task inferred), task-agnostic (task inferred)" in (
        result.output
    )
    assert "der" in result.output and "class-il" in result.output


def test_list_benchmarks_reads_at_80_columns(monkeypatch):
    from growsearch.data.benchmarks import list_benchmarks

    monkeypatch.setattr(cli.console, "_width", 80)
    result = runner.invoke(app, ["list", "benchmarks"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    names = [info.name for info in list_benchmarks()]
    starts = [i for i, line in enumerate(lines) if line.split() and line.split()[0] in names]
    assert [lines[i].split()[0] for i in starts] == names  # every name whole, one row each, in order
    assert max(b - a for a, b in zip(starts, starts[1:], strict=False)) <= 3  # a row: three lines at most
    assert "T task-il, C class-il, D domain-il, A task-agnostic" in result.output
