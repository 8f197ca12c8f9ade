"""Image datasets read as sequences, row by row: each image's rows are the time steps and its columns the
features at a step (an 8x8 digit: 8 steps of 8 features; a 28x28 MNIST image: 28 steps of 28), the way
recurrent continual learners read MNIST (Cossu et al. 2020, GIM). Inputs are (T, F) per sample."""

from __future__ import annotations

import importlib
from pathlib import Path

from growsearch.data.base import BaseDataset, RawSplit
from growsearch.errors import DataError


def load(
    image_module: str, benchmark: str, data_root: str | Path | None, download: bool, val_fraction: float
) -> BaseDataset:
    """The single-channel image dataset of loader `growsearch.data.<image_module>`, cut as it cuts it, with
    every (1, H, W) image read as H steps of W features."""
    images = importlib.import_module(f"growsearch.data.{image_module}")
    base = images.load(benchmark, data_root, download, val_fraction)
    if base.train.x.shape[1] != 1:
        raise DataError(
            f"benchmark {benchmark!r}: rows become time steps only for single-channel images; "
            f"{base.name} has {base.train.x.shape[1]} channels"
        )
    splits = (RawSplit(s.x[:, 0], s.y) for s in (base.train, base.val, base.test))
    return BaseDataset(f"{base.name}-rows", *splits, base.classes, base.scale)
