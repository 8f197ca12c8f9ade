"""Base datasets: a labelled image pool cut into train/val/test, before any stream transform."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from growsearch.data.splitting import rng_for, stratified_cut
from growsearch.errors import DataError

SPLIT_SEED = 20240601  # the train/val/test cut is fixed, whatever the run seed
TEST_FRACTION = 0.15  # for datasets without an official test split


@dataclass(frozen=True, eq=False)
class RawSplit:
    """Stored samples: x uint8 (n, C, H, W), y int64 original class ids."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, idx: np.ndarray) -> RawSplit:
        index = torch.as_tensor(idx, dtype=torch.long)
        return RawSplit(self.x[index], self.y[index])


@dataclass(frozen=True, eq=False)
class BaseDataset:
    """A dataset cut into train/val/test; `scale` maps stored values to [0, 1] (x / scale)."""

    name: str
    train: RawSplit
    val: RawSplit
    test: RawSplit
    classes: tuple[int, ...]  # sorted original class ids
    scale: float

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.train.x.shape[1:])


def from_pool(name: str, x: torch.Tensor, y: torch.Tensor, scale: float, val_fraction: float) -> BaseDataset:
    """A dataset with no official test split: stratified val / test (TEST_FRACTION) / train cut."""
    pool = RawSplit(x, y)
    val, test, train = stratified_cut(y.numpy(), (val_fraction, TEST_FRACTION), rng_for(SPLIT_SEED))
    return _dataset(name, pool.take(train), pool.take(val), pool.take(test), scale)


def from_official(
    name: str, train: RawSplit, test: RawSplit, scale: float, val_fraction: float
) -> BaseDataset:
    """A dataset with an official test split: validation is a stratified part of the official train."""
    val, rest = stratified_cut(train.y.numpy(), (val_fraction,), rng_for(SPLIT_SEED))
    return _dataset(name, train.take(rest), train.take(val), test, scale)


def _dataset(name: str, train: RawSplit, val: RawSplit, test: RawSplit, scale: float) -> BaseDataset:
    classes = tuple(int(c) for c in torch.unique(train.y).tolist())
    return BaseDataset(name, train, val, test, classes, float(scale))


def require_root(benchmark: str, data_root: str | Path | None) -> Path:
    """The data root as a Path; DataError if the benchmark needs one and none was given."""
    if data_root is None or str(data_root) == "":
        raise DataError(
            f"benchmark {benchmark!r} reads its data from disk: --data-root is required "
            "(add --download to fetch the data into it)"
        )
    return Path(data_root).expanduser()


def missing_data(
    benchmark: str, root: Path, expected: Path, hint: str = "pass --download to fetch it"
) -> DataError:
    """The error for a data root that lacks a file or folder the benchmark needs."""
    where = "does not exist" if not root.exists() else "does not hold the dataset"
    return DataError(
        f"benchmark {benchmark!r}: data root {str(root)!r} {where}: expected {str(expected)!r}; {hint}"
    )
