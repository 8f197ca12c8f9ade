"""scikit-learn's digits: 1,797 real 8x8 handwritten digits (values 0..16), bundled with scikit-learn."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from growsearch.data.base import BaseDataset, from_pool


def _bundled_csv() -> Path | None:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn (which takes ~1.5 s)."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=1)
def _pool() -> tuple[torch.Tensor, torch.Tensor]:
    path = _bundled_csv()
    if path is not None:  # the file load_digits() parses: 64 pixel columns then the label
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images, target = bunch.images, bunch.target
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.from_numpy(target.astype(np.int64))
    return x, y


def load(benchmark: str, data_root: str | Path | None, download: bool, val_fraction: float) -> BaseDataset:
    """The digits pool cut 70/15/15 (val = val_fraction) with a fixed seed; needs no data root."""
    x, y = _pool()
    return from_pool("digits", x, y, 16.0, val_fraction)
