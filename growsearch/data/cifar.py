"""CIFAR-10 / CIFAR-100 from a data root in the python-pickle layout, read with a restricted unpickler."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from growsearch.data.base import BaseDataset, RawSplit, from_official, missing_data, require_root
from growsearch.data.safe_pickle import safe_load
from growsearch.errors import DataError


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches and which keys hold labels and class names."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    n_classes: int
    torchvision_class: str

    def files(self, root: Path) -> list[Path]:
        names = (*self.train_files, *self.test_files, self.meta_file)
        return [root / self.folder / name for name in names]


CIFAR10 = CifarLayout(
    "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
    "batches.meta", "labels", "label_names", 10, "CIFAR10",
)  # fmt: skip
CIFAR100 = CifarLayout(
    "cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100, "CIFAR100"
)


def load(
    layout: CifarLayout, benchmark: str, data_root: str | Path | None, download: bool, val_fraction: float
) -> BaseDataset:
    """Official train (minus a stratified validation part) and test splits."""
    root = require_root(benchmark, data_root)
    files = layout.files(root)
    if download and not all(p.is_file() for p in files):
        _download(layout, benchmark, root)
    for path in files:
        if not path.is_file():
            raise missing_data(benchmark, root, path)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    try:
        train, test = _read(layout, str(root.resolve()), stamp)
    except DataError as exc:
        raise DataError(f"benchmark {benchmark!r}: {exc}") from exc
    return from_official(layout.torchvision_class.lower(), train, test, 255.0, val_fraction)


def _download(layout: CifarLayout, benchmark: str, root: Path) -> None:
    """Fetch and unpack the official archive (torchvision's URL and checksum); nothing is unpickled here."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive

    cls = getattr(datasets, layout.torchvision_class)
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(
            f"benchmark {benchmark!r}: downloading {cls.url} into {str(root)!r} failed: {exc}"
        ) from exc


@lru_cache(maxsize=2)
def _read(layout: CifarLayout, root: str, stamp: tuple) -> tuple[RawSplit, RawSplit]:
    folder = Path(root) / layout.folder
    names = _entries(folder / layout.meta_file).get(layout.names_key)
    if names is None or len(names) != layout.n_classes:
        raise DataError(
            f"{str(folder / layout.meta_file)!r}: expected {layout.n_classes} class names under "
            f"{layout.names_key!r}; not a {layout.torchvision_class} meta file"
        )
    train = _concat([_batch(layout, folder / name) for name in layout.train_files])
    test = _concat([_batch(layout, folder / name) for name in layout.test_files])
    return train, test


def _entries(path: Path) -> dict[str, Any]:
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise DataError(f"{str(path)!r}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _batch(layout: CifarLayout, path: Path) -> RawSplit:
    entries = _entries(path)
    data, labels = entries.get("data"), entries.get(layout.label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{str(path)!r}: expected 'data' as a uint8 (n, 3072) array, found {found}")
    try:
        y = np.asarray(labels if labels is not None else [], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        y = np.zeros(0, dtype=np.int64)
    if len(y) != len(data) or (len(y) and (y.min() < 0 or y.max() >= layout.n_classes)):
        raise DataError(
            f"{str(path)!r}: expected {len(data)} labels in 0..{layout.n_classes - 1} under "
            f"{layout.label_key!r}, found {len(y)}"
        )
    x = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return RawSplit(x, torch.from_numpy(y))


def _concat(parts: list[RawSplit]) -> RawSplit:
    return RawSplit(torch.cat([p.x for p in parts]), torch.cat([p.y for p in parts]))
