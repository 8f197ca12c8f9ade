"""Loggers: every trial's per-epoch curve and every committed task, as they happen.

`CsvLogger` always writes the run folder's `curves.csv` (task, trial, epoch, training loss and accuracy,
validation accuracy); `--logger tensorboard` adds TensorBoard event files under `tensorboard/` (the
`tensorboard` extra), `--logger wandb` a Weights & Biases run (the `wandb` extra; offline unless W&B is
configured). A logger sees what the driver sees, on either backend.
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from growsearch.errors import ConfigError, UnknownNameError
from growsearch.task_record import TaskRecord
from growsearch.train.trainer import EpochStats

LOGGERS = ("csv", "tensorboard", "wandb")
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
        new = not self.path.exists()
        self.handle = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for the run
        self.writer = csv.writer(self.handle)
        if new:
            self.writer.writerow(CURVE_COLUMNS)

    def epoch(self, task: int, trial: int, stats: EpochStats) -> None:
        row = stats.to_json()
        self.writer.writerow([task, trial, *(row[c] for c in CURVE_COLUMNS[2:])])
        self.handle.flush()

    def task(self, task: int, record: TaskRecord) -> None:
        pass

    def close(self) -> None:
        self.handle.close()


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


_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_loggers(names: Sequence[str]) -> None:
    """Refuse an unknown logger, or one whose package is missing, before a run starts."""
    for name in names:
        if name not in LOGGERS:
            raise UnknownNameError("logger", name, LOGGERS)
        package = _EXTRAS.get(name)
        if package and importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"--logger {name} needs the {package} package: pip install 'growsearch[{name}]'"
            )


def make_loggers(run_path: Path, names: Sequence[str]) -> list[Logger]:
    check_loggers(names)
    loggers: list[Logger] = [CsvLogger(run_path)]
    classes = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}
    loggers += [classes[name](run_path) for name in dict.fromkeys(names) if name in classes]
    return loggers
