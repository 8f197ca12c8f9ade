"""Deterministic stratified index selection: train/val/test cuts and per-task caps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rng_for(*keys: int) -> np.random.Generator:
    """A generator seeded by a tuple of non-negative integers (seed, task id, purpose, ...)."""
    return np.random.default_rng([int(k) for k in keys])


def stratified_cut(y: np.ndarray, fractions: Sequence[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Cut indices of `y` into len(fractions) + 1 parts, class by class.

    Part i (i < len(fractions)) takes round(fractions[i] * n_c) samples of each class c; the last part
    takes the rest. Every part's indices are sorted.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for i, frac in enumerate(fractions):
            stop = min(len(idx), start + int(round(frac * len(idx))))
            parts[i].append(idx[start:stop])
            start = stop
        parts[-1].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]


def stratified_cap(y: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most `cap` samples of `y`, keeping class proportions (largest remainder)."""
    if len(y) <= cap:
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    exact = counts * cap / len(y)
    quota = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - quota), kind="stable")[: cap - int(quota.sum())]:
        quota[i] += 1
    pools = [np.flatnonzero(y == c) for c in classes]
    chosen = [rng.choice(pool, size=q, replace=False) for pool, q in zip(pools, quota, strict=True)]
    return np.sort(np.concatenate(chosen))
