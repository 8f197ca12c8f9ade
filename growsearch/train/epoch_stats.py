"""One epoch of a trial's training as the loggers, the study and the report see it (no torch here: commands
that only read a run folder use it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochStats:
    epoch: int  # 0-based
    train_loss: float  # mean cross-entropy of the epoch's batches
    train_accuracy: float | None  # on those batches, as they were trained (None: not tracked)
    val_accuracy: float | None = None
    # the candidate's costs among the search's objectives, known once it is built (added parameters,
    # forward multiply-adds): what successive halving ranks a trial on beside its accuracy; not logged
    costs: tuple[float, ...] = ()

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
        }
