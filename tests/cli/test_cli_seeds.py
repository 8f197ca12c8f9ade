"""`growsearch run --seeds`: one whole run per seed under a group folder, each the run its seed gives alone,
resumed as a group after kill -9 to what an uninterrupted group commits, and summarised as mean ± std by
`run`, `report` and `compare`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from growsearch.cli import app
from growsearch.config.run_options import RunOptions
from growsearch.run_group import parse_seeds
from growsearch.runner import start_run

from tiny_runs import kill, tiny_space, wait_for

runner = CliRunner()
ROOT = Path(__file__).parents[2]
SIZE = ["--tasks", "2", "--max-per-task", "40", "--epochs", "1"]


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def group(tmp_path_factory, one_thread):
    """A two-seed group of tiny PNN runs made by the command line, with what it printed."""
    root = tmp_path_factory.mktemp("seeds")
    config = root / "pnn.yaml"
    config.write_text(yaml.safe_dump(tiny_space("pnn").to_dict()))
    args = ["run", str(config), "--seeds", "3,5", "--runs-dir", str(root), "--name", "g", *SIZE]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "g", config, result.output


def test_each_seed_is_the_run_that_seed_gives_alone(group, tmp_path):
    path, config, _ = group
    assert sorted(p.name for p in path.iterdir() if p.is_dir()) == ["seed-3", "seed-5"]
    member = path / "seed-5"
    assert yaml.safe_load((member / "config.yaml").read_text())["run"]["seed"] == 5
    space = tiny_space("pnn", training={"epochs": 1})  # what --epochs 1 gave the members
    options = RunOptions(benchmark="split-digits", n_tasks=2, max_per_task=40, seed=5)
    alone = start_run(space, options, tmp_path / "alone")
    assert _metrics(member)["accuracy"] == alone.metrics["accuracy"]
    assert _metrics(member)["accuracy"] != _metrics(path / "seed-3")["accuracy"]  # seeds differ


def test_the_summary_is_the_mean_and_spread_of_the_seeds(group):
    path, _, output = group
    values = [_metrics(path / f"seed-{s}")["metrics"]["average_accuracy"] for s in (3, 5)]
    shown = re.search(r"A_T\s*│\s*([0-9.]+) ± ([0-9.]+)", output)
    assert shown, output
    assert float(shown[1]) == pytest.approx(np.mean(values), abs=1e-4)
    assert float(shown[2]) == pytest.approx(np.std(values, ddof=1), abs=1e-4)
    assert "task 1: accuracy after task 1" in output and "seed 3" in output and "seed 5" in output


def test_report_of_a_group_shows_the_seeds_mean_and_spread(group, tmp_path):
    path, _, _ = group
    result = runner.invoke(app, ["report", str(path), "--output", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert re.search(r"A_T\s*│\s*[0-9.]+ ± [0-9.]+", result.output)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Mean and spread over the seeds" in page and "task 1: accuracy when learnt" in page


def test_compare_takes_a_group_for_its_runs(group, tmp_path):
    path, _, _ = group
    result = runner.invoke(app, ["compare", str(path), "--output", str(tmp_path / "c.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "c.html").read_text()
    assert "pnn: mean ± std of 2 runs (seeds 3, 5)" in page
    assert [row.split(",")[2] for row in (tmp_path / "c.csv").read_text().splitlines()[1:]] == ["3", "5"]


def test_a_group_killed_mid_run_resumes_to_what_an_uninterrupted_group_commits(group, tmp_path):
    path, config, _ = group
    command = [sys.executable, "-m", "growsearch", "run", str(config), "--seeds", "3,5"]
    command += ["--runs-dir", str(tmp_path), "--name", "g", *SIZE]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = tmp_path / "g"
    wait_for(lambda: (killed / "seed-3" / "tasks" / "0").is_dir(), process)  # seed 3 mid-run, seed 5 new
    kill(process)
    process.wait()
    assert not (killed / "seed-5").exists()
    result = runner.invoke(app, ["resume", str(killed)])
    assert result.exit_code == 0, result.output
    assert "seed 3: resuming" in result.output and "seed 5: run folder" in result.output
    assert "kept: 1 task(s) committed (0..0); task 1" in result.output  # afresh, or trials kept
    for seed in (3, 5):
        resumed, reference = _metrics(killed / f"seed-{seed}"), _metrics(path / f"seed-{seed}")
        assert resumed["accuracy"] == reference["accuracy"]
        assert resumed["decisions"] == reference["decisions"]


def test_parallel_seeds_run_in_processes_with_a_log_each(group, tmp_path):
    _, config, _ = group
    args = [
        "run",
        str(config),
        "--seeds",
        "3,5",
        "--parallel",
        "2",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "p",
    ]
    result = runner.invoke(app, [*args, *SIZE], env={"OMP_NUM_THREADS": "1"})
    assert result.exit_code == 0, result.output
    for seed in (3, 5):
        assert (tmp_path / "p" / f"seed-{seed}.log").is_file()
        assert _metrics(tmp_path / "p" / f"seed-{seed}")["n_tasks"] == 2
    assert "2 of 2 seeds complete" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-", "expected seeds such as 0,1,2 or 0-4"),
        ("3-1", "runs backwards"),
        ("1,1", "seed 1 is given twice"),
        ("4", "expected two or more seeds"),
        ("0-5000", "at most 1,000 seeds"),
    ],
)
def test_bad_seeds_are_one_line_and_write_nothing(text, message, tmp_path):
    result = runner.invoke(app, ["run", "pnn", "--seeds", text, "--runs-dir", str(tmp_path), "--name", "g"])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "g").exists()
    with pytest.raises(Exception, match=message):
        parse_seeds(text)


def test_seed_and_seeds_together_are_refused(tmp_path):
    args = ["run", "pnn", "--seed", "1", "--seeds", "0,1", "--runs-dir", str(tmp_path), "--name", "g"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--seed and --seeds: give one" in result.output
    assert not (tmp_path / "g").exists()
