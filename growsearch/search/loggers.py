"""Loggers: every trial's per-epoch curve and every committed task, as they happen.

`CsvLogger` always writes the run folder's `curves.csv` (task, trial, epoch, training loss and accuracy,
validation accuracy; `read_curves` reads it back for the report); `--logger tensorboard` adds TensorBoard
event files under `tensorboard/` (the `tensorboard` extra), `--logger wandb` a Weights & Biases run (the
`wandb` extra; offline unless W&B is configured), `--logger mlflow` an MLflow run (the `mlflow` extra). A
logger sees what the driver sees, on either backend.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from growsearch.atomic_files import atomic_write_json, read_json
from growsearch.config.run_options import check_logger
from growsearch.errors import CheckpointError
from growsearch.store.run_folder import METRICS_FILE, RunFolder
from growsearch.task_record import TaskRecord
from growsearch.train.epoch_stats import EpochStats

LOGGERS = ("csv", "tensorboard", "wandb", "mlflow")
CURVES_FILE = "curves.csv"
CURVE_COLUMNS = ("task", "trial", "epoch", "train_loss", "train_accuracy", "val_accuracy")


class Logger(Protocol):
    def epoch(self, task: int, trial: int, stats: EpochStats) -> None: ...
    def task(self, task: int, record: TaskRecord) -> None: ...
    def close(self) -> None: ...


class CsvLogger:
    """Appends each epoch to curves.csv (a resumed run goes on appending)."""

    def __init__(self, run_path: Path):
        self.path = Path(run_path) / CURVES_FILE
        empty = not self.path.exists() or self.path.stat().st_size == 0  # killed before its first row
        self.handle = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self.writer = csv.writer(self.handle)
        if empty:
            self.writer.writerow(CURVE_COLUMNS)
        elif not _ends_a_line(self.path):  # a row cut short by a kill: end it (`read_curves` skips it)
            self.handle.write("\r\n")

    def epoch(self, task: int, trial: int, stats: EpochStats) -> None:
        row = stats.to_json()
        self.writer.writerow([task, trial, *(row[c] for c in CURVE_COLUMNS[2:])])
        self.handle.flush()

    def task(self, task: int, record: TaskRecord) -> None:
        pass

    def close(self) -> None:
        self.handle.close()


def _ends_a_line(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def read_curves(run_path: Path) -> dict[int, dict[int, list[EpochStats]]]:
    """curves.csv as task -> trial -> its epochs (none: no curves.csv). A trial interrupted and re-run on
    resume appears twice, appended: an epoch number that does not go up starts it afresh, so its last run
    is kept. A row cut short by a kill is skipped; a file that cannot be read is warned about."""
    curves: dict[int, dict[int, list[EpochStats]]] = {}
    path = Path(run_path) / CURVES_FILE
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        return curves
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        logging.getLogger("growsearch").warning("%s cannot be read (%s): no learning curves", path, error)
        return curves
    for row in rows:
        if None in row or None in row.values():  # too many or too few fields: a row cut short
            continue
        try:
            task, trial, epoch = (int(row[c]) for c in CURVE_COLUMNS[:3])
            loss, train, val = (float(row[c]) if row[c] else None for c in CURVE_COLUMNS[3:])
        except ValueError:
            continue
        epochs = curves.setdefault(task, {}).setdefault(trial, [])
        if epochs and epoch <= epochs[-1].epoch:
            epochs.clear()
        epochs.append(EpochStats(epoch, math.nan if loss is None else loss, train, val))
    return curves


class TensorBoardLogger:
    """Scalars per trial (`task T/trial N/...`) and each committed task's test accuracies."""

    def __init__(self, run_path: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_path) / "tensorboard"))

    def epoch(self, task: int, trial: int, stats: EpochStats) -> None:
        for name, value in stats.to_json().items():
            if name != "epoch" and value is not None:
                self.writer.add_scalar(f"task {task}/trial {trial}/{name}", value, stats.epoch)

    def task(self, task: int, record: TaskRecord) -> None:
        for j, accuracy in enumerate(record.accuracy_row[: task + 1]):
            self.writer.add_scalar(f"test accuracy/task {j}", accuracy, task)
        self.writer.add_scalar("parameters", record.parameters, task)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A Weights & Biases run named after the run folder (offline unless W&B is set up)."""

    def __init__(self, run_path: Path):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project="growsearch", name=Path(run_path).name, dir=str(run_path), resume="allow"
        )

    def epoch(self, task: int, trial: int, stats: EpochStats) -> None:
        values = {f"task{task}/trial{trial}/{k}": v for k, v in stats.to_json().items() if v is not None}
        self.run.log(values)

    def task(self, task: int, record: TaskRecord) -> None:
        self.run.log({f"test_accuracy/task{j}": a for j, a in enumerate(record.accuracy_row[: task + 1])})

    def close(self) -> None:
        self.run.finish()


MLFLOW_RUN_FILE = "mlflow_run.json"
MAX_PARAM, MAX_BATCH = 6000, 100  # characters of an MLflow param's value; params in one log_batch


class MlflowLogger:
    """One MLflow run per growsearch run: params from config.yaml, each trial's epochs, each committed task's
    test accuracies and, at the end, the run's metrics. By default the store is the run folder's
    `mlruns/mlflow.db`: MLflow 3 keeps its file store in maintenance mode (refused unless
    MLFLOW_ALLOW_FILE_STORE is set) and SQLite needs no server; MLFLOW_TRACKING_URI names another store.
    A resumed run continues the same MLflow run, whose id mlflow_run.json keeps."""

    def __init__(self, run_path: Path):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        logging.getLogger("mlflow").setLevel(
            logging.WARNING
        )  # no notes on its tables under the progress bars
        self.run_path = Path(run_path)
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        local = None if uri else self.run_path.resolve() / "mlruns"
        if local is not None:
            local.mkdir(exist_ok=True)
            uri = f"sqlite:///{local / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = self._continued() or self._started(local)
        logged = self.client.get_run(self.run_id).data.params
        # a forced resume may change the config: MLflow keeps a param's first value (config.yaml has both)
        params = [
            Param(k, v) for k, v in run_params(RunFolder(self.run_path).config()).items() if k not in logged
        ]
        for first in range(0, len(params), MAX_BATCH):
            self.client.log_batch(self.run_id, params=params[first : first + MAX_BATCH])

    def _continued(self) -> str | None:
        """The id of the run this folder logged to before, if the store still holds it (set running)."""
        from mlflow.exceptions import MlflowException

        try:
            run_id = read_json(self.run_path / MLFLOW_RUN_FILE)["run_id"]
            self.client.update_run(run_id, status="RUNNING")
        except (CheckpointError, KeyError, TypeError, MlflowException):
            return None
        return run_id

    def _started(self, local: Path | None) -> str:
        """A new MLflow run (in a new experiment `growsearch` where the store has none), its id kept."""
        experiment_name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "growsearch")
        experiment = self.client.get_experiment_by_name(experiment_name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:  # artifacts beside the local store, not in the working directory
            artifacts = None if local is None else (local / "artifacts").as_uri()
            experiment_id = self.client.create_experiment(experiment_name, artifact_location=artifacts)
        folder = self.run_path.resolve()  # tells apart runs of one name in a shared store (seed-S of groups)
        run = self.client.create_run(experiment_id, run_name=folder.name, tags={"run_folder": str(folder)})
        run_id = run.info.run_id
        atomic_write_json(self.run_path / MLFLOW_RUN_FILE, {"run_id": run_id})
        return run_id

    def _log(self, values: Mapping[str, Any], step: int) -> None:
        """The finite numbers of `values` as metrics at `step`, in one write to the store."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numbers = {k: v for k, v in values.items() if isinstance(v, int | float) and math.isfinite(v)}
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in numbers.items()]
        )

    def epoch(self, task: int, trial: int, stats: EpochStats) -> None:
        values = stats.to_json()
        del values["epoch"]
        self._log({f"task{task}/trial{trial}/{k}": v for k, v in values.items()}, stats.epoch)

    def task(self, task: int, record: TaskRecord) -> None:
        accuracies = {f"test_accuracy/task{j}": a for j, a in enumerate(record.accuracy_row[: task + 1])}
        self._log({**accuracies, "parameters": record.parameters}, task)

    def close(self) -> None:
        """The run's metrics from metrics.json; the run FINISHED once every task is committed, else KILLED
        (a resume continues it)."""
        try:
            metrics = read_json(self.run_path / METRICS_FILE)
            complete = metrics["tasks_committed"] == metrics["n_tasks"]
            self._log(metrics["metrics"], metrics["tasks_committed"] - 1)
        except (CheckpointError, KeyError, TypeError):
            complete = False
        self.client.set_terminated(self.run_id, "FINISHED" if complete else "KILLED")


def run_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A run's MLflow params: method and the run options (benchmark, seed, ...) by name, and the resolved
    space's network, training, search and method options as `section.key`."""
    space = config["space"]
    params = {"method": space["method"], **config["run"]}
    for section in ("network", "training", "search", "options"):
        params.update({f"{section}.{k}": v for k, v in space.get(section, {}).items()})
    return {k: (v if isinstance(v, str) else json.dumps(v))[:MAX_PARAM] for k, v in params.items()}


def check_loggers(names: Sequence[str]) -> None:
    """Refuse an unknown logger, or one whose package is missing, before a run starts."""
    for name in names:
        check_logger(name)


def make_loggers(run_path: Path, names: Sequence[str]) -> list[Logger]:
    check_loggers(names)
    loggers: list[Logger] = [CsvLogger(run_path)]
    classes = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger, "mlflow": MlflowLogger}
    loggers += [classes[name](run_path) for name in dict.fromkeys(names) if name in classes]
    return loggers
