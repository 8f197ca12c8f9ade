"""MNIST and FashionMNIST from a data root in torchvision's layout (ROOT/<Name>/raw/*-ubyte)."""

from __future__ import annotations

import pickle
from functools import lru_cache
from pathlib import Path

import torch

from growsearch.data.base import BaseDataset, RawSplit, from_official, missing_data, require_root
from growsearch.errors import DataError

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def expected_files(root: Path, folder: str) -> list[Path]:
    """The raw idx files torchvision's `folder` class ("MNIST", "FashionMNIST") reads under `root`."""
    return [root / folder / "raw" / name for name in FILES]


def load(
    folder: str, benchmark: str, data_root: str | Path | None, download: bool, val_fraction: float
) -> BaseDataset:
    """Official train (minus a stratified validation part) and test splits of `folder`."""
    root = require_root(benchmark, data_root)
    if download:
        _download(folder, benchmark, root)
    files = expected_files(root, folder)
    for path in files:
        if not path.is_file():
            raise missing_data(benchmark, root, path)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    try:
        train, test = _read(folder, str(root.resolve()), stamp)
    except DataError as exc:
        raise DataError(f"benchmark {benchmark!r}: {exc}") from exc
    return from_official(folder.lower(), train, test, 255.0, val_fraction)


def _torchvision_class(folder: str) -> type:
    from torchvision import datasets

    return getattr(datasets, folder)


def _download(folder: str, benchmark: str, root: Path) -> None:
    try:
        _torchvision_class(folder)(str(root), train=True, download=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(
            f"benchmark {benchmark!r}: downloading {folder} into {str(root)!r} failed: {exc}"
        ) from exc


@lru_cache(maxsize=4)
def _read(folder: str, root: str, stamp: tuple) -> tuple[RawSplit, RawSplit]:
    splits = []
    for train in (True, False):
        try:
            ds = _torchvision_class(folder)(root, train=train, download=False)
        except (RuntimeError, OSError, ValueError, TypeError, IndexError, AssertionError, EOFError) as exc:
            # a garbage idx file fails torchvision's assertions; a hostile processed/*.pt is refused by
            # torch.load's weights-only unpickler (an UnpicklingError, a RuntimeError here or there)
            which = "train" if train else "test"
            raise DataError(
                f"cannot read the {folder} {which} files under {str(Path(root) / folder)!r} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
                "expected torchvision's MNIST layout: raw/*-ubyte idx files"
            ) from None
        except pickle.UnpicklingError as exc:
            raise DataError(
                f"{str(Path(root) / folder / 'processed')!r} holds a file torch refuses to load (it is not "
                f"plain tensors: {str(exc).splitlines()[0]}); remove it to read the raw idx files"
            ) from None
        x, y = ds.data, ds.targets
        if x.dim() != 3 or x.shape[0] != y.shape[0]:
            raise DataError(
                f"{folder} files under {root!r} hold {tuple(x.shape)} images but {tuple(y.shape)} labels"
            )
        splits.append(RawSplit(x.to(torch.uint8).unsqueeze(1).contiguous(), y.to(torch.int64)))
    return splits[0], splits[1]
