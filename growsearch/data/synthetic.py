"""Labelled synthetic data in a dataset's standard layout: for throughput checks and tests of the real-size
path where the real files cannot be had (never for accuracy)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_synthetic_cifar100(root: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """CIFAR-100 in its python-pickle layout (`root/cifar-100-python/`): random 32x32 colour images, each
    class around a random pattern of its own (seeded), so a network has something to learn."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    patterns = rng.integers(0, 256, size=(100, 3072))
    for name, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = np.repeat(np.arange(100), per_class)
        noise = rng.integers(-40, 40, size=(len(labels), 3072))
        images = np.clip(patterns[labels] + noise, 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": images, b"fine_labels": labels.tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class{i}".encode() for i in range(100)]}, f)
    return Path(root)
