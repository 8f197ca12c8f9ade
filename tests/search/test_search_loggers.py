"""What the loggers write: curves.csv with a training accuracy in every row, whether trials train alone or
packed, read back with a re-run trial's last run kept; an MLflow run read back with MlflowClient, continued
by a resume and named in the report; `--logger mlflow` without its extra refused in one line before
anything is written."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from growsearch.report.html_report import write_report
from growsearch.runner import resume_run, start_run
from growsearch.search.loggers import MLFLOW_RUN_FILE, CsvLogger, read_curves
from growsearch.search.pipeline import SilentReporter
from growsearch.train.trainer import EpochStats

from tiny_runs import tiny_options, tiny_space

TWO_TASKS = dataclasses.replace(tiny_options(), n_tasks=2, max_per_task=40)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "curves.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("pack", [1, 3])
def test_every_row_of_curves_csv_holds_the_training_accuracy(tmp_path, pack):
    space = tiny_space("rcl", search={"n_trials": 3, "pack": pack}, training={"epochs": 2})
    rows = _rows(start_run(space, TWO_TASKS, tmp_path / "run").path)
    assert len(rows) == (1 + 3) * 2  # task 0 trains one trial, task 1 three (packed or not); two epochs
    assert all(0 <= float(row["train_accuracy"]) <= 1 for row in rows), rows
    assert len({row["train_accuracy"] for row in rows}) > 1  # measured, not a constant


def test_read_curves_keeps_a_re_run_trial_s_last_run_and_skips_a_cut_row(tmp_path):
    (tmp_path / "curves.csv").write_text(
        "task,trial,epoch,train_loss,train_accuracy,val_accuracy\r\n"
        "0,0,0,1.5,0.4,0.5\r\n0,0,1,1.0,0.6,0.7\r\n"
        "0,1,0,9.0,0.1,0.1\r\n"  # trial 1 interrupted after an epoch...
        "0,1,0,1.3,0.5,0.6\r\n0,1,1,0.9,0.7,0.8\r\n"  # ...and run again on resume
        "1,0,0,1.2,,0.5\r\n1,0,1,1.1"  # a row of an older run (no training accuracy), a row cut by a kill
    )
    logger = CsvLogger(tmp_path)  # a resume appends on a line of its own
    logger.epoch(1, 0, EpochStats(1, 1.0, 0.5, 0.6))
    logger.close()
    curves = read_curves(tmp_path)
    assert curves[0][0] == [EpochStats(0, 1.5, 0.4, 0.5), EpochStats(1, 1.0, 0.6, 0.7)]
    assert curves[0][1] == [EpochStats(0, 1.3, 0.5, 0.6), EpochStats(1, 0.9, 0.7, 0.8)]
    assert curves[1][0] == [EpochStats(0, 1.2, None, 0.5), EpochStats(1, 1.0, 0.5, 0.6)]
    assert read_curves(tmp_path / "nowhere") == {}


class _StopAfterTask0(SilentReporter):
    def task_committed(self, task, record):
        raise KeyboardInterrupt


# MLflow's own SQLAlchemy store uses a loader SQLAlchemy 2 deprecates
@pytest.mark.filterwarnings("ignore::DeprecationWarning:mlflow.store.tracking.sqlalchemy_store")
def test_mlflow_holds_one_run_per_growsearch_run_which_a_resume_continues(tmp_path, monkeypatch):
    from mlflow import MlflowClient  # the test extra holds mlflow-skinny: this test runs, never skips

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    path = tmp_path / "run"
    space = tiny_space("mntdp-d", training={"epochs": 2})
    options = dataclasses.replace(TWO_TASKS, loggers=("mlflow",))
    with pytest.raises(KeyboardInterrupt):
        start_run(space, options, path, _StopAfterTask0())
    client = MlflowClient(f"sqlite:///{path / 'mlruns' / 'mlflow.db'}")
    run_id = json.loads((path / MLFLOW_RUN_FILE).read_text())["run_id"]
    assert client.get_run(run_id).info.status == "KILLED"  # interrupted: a resume continues it

    result = resume_run(path)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.tags["run_folder"] == str(path.resolve())
    assert [r.info.run_id for r in client.search_runs([run.info.experiment_id])] == [run_id]
    params = run.data.params
    assert params["method"] == "mntdp-d" and params["benchmark"] == "split-digits" and params["seed"] == "0"
    assert params["training.epochs"] == "2" and params["training.lr"] == "0.05"
    assert (
        params["search.sampler"] == "grid"
        and json.loads(params["network.layers"])[0]["linear"]["width"] == 16
    )

    rows = _rows(path)
    assert {(r["task"], r["trial"]) for r in rows} == {("0", "0"), ("1", "0"), ("1", "1"), ("1", "2")}
    for row in rows:  # every epoch of every trial, at step epoch
        key = f"task{row['task']}/trial{row['trial']}"
        for name in ("train_loss", "train_accuracy", "val_accuracy"):
            history = {m.step: m.value for m in client.get_metric_history(run_id, f"{key}/{name}")}
            assert history[int(row["epoch"])] == pytest.approx(float(row[name]))
    for task, record in enumerate(result.records):  # each committed task's test accuracies, at step task
        for j, accuracy in enumerate(record.accuracy_row[: task + 1]):
            history = client.get_metric_history(run_id, f"test_accuracy/task{j}")
            assert {m.step: m.value for m in history}[task] == pytest.approx(accuracy)
    final = result.metrics["metrics"]["average_accuracy"]
    assert run.data.metrics["average_accuracy"] == pytest.approx(final)
    page = write_report(path).html.read_text()  # which says how to open it
    assert f"mlflow ui --backend-store-uri sqlite:///{path / 'mlruns' / 'mlflow.db'}" in page


def test_logger_mlflow_without_its_extra_is_one_line_and_writes_nothing(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space("pnn").to_dict()))
    # the package hidden, as if not installed: finding it answers None
    hidden = "import sys; sys.modules['mlflow'] = None; from growsearch.cli import app; app()"
    command = [sys.executable, "-c", hidden, "run", str(space), "--runs-dir", str(tmp_path), "--name", "x"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run(
        [*command, "--logger", "mlflow"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 2 and done.stdout == "", (done.stdout, done.stderr)
    assert "pip install 'growsearch[mlflow]'" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "x").exists()
