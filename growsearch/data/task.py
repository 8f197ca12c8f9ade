"""The data a continual learner sees: splits, tasks and a stream of tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from growsearch.data.normalize import Normalization
    from growsearch.data.scenarios import Scenario


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly
class Split:
    """One split of one task: inputs scaled to [0, 1] (then normalised per channel where the stream's
    `normalization` says so) and labels as the scenario presents them."""

    x: torch.Tensor  # float32 (n, C, H, W), or (n, T, F) for a sequence benchmark
    y: torch.Tensor  # int64 (n,)

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly
class Task:
    """One task of a stream; `classes` are the original dataset class ids it holds."""

    task_id: int
    classes: tuple[int, ...]
    train: Split
    val: Split
    test: Split
    n_outputs: int  # width of the output head this task needs under the scenario


@dataclass(frozen=True, eq=False)  # tensors: compare fields explicitly
class TaskStream:
    """A benchmark under one scenario: the tasks in the order a learner meets them."""

    benchmark: str
    scenario: Scenario
    input_shape: tuple[int, ...]  # (C, H, W), or (T, F) for a sequence benchmark
    tasks: tuple[Task, ...]
    # the per-channel (x - mean) / std the loader applied to every split's [0, 1] inputs; None: none
    normalization: Normalization | None = None
    # what the validation floor did (`data.validation_floor`): None where no floor was asked for
    validation: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.tasks)
