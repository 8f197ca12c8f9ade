"""ImageNet-100 from a data root holding the subset as an ImageFolder (torchvision's layout):

    ROOT/imagenet100/train/<class>/*.JPEG      (any depth, any of ImageFolder's image extensions)
    ROOT/imagenet100/val/<class>/*.JPEG        the official validation images of those classes: test

Class ids follow ImageFolder: the sorted class folder names. Whichever 100 classes the folder holds are
used (the subset of UCIR / PODNet / DER / PyCIL is the usual one). The library keeps a stream's tensors
in memory, so every image is reduced to SIZE x SIZE = 32x32 (the shorter side resized, the centre
cropped: torchvision's Resize + CenterCrop), the input size of the CIFAR ResNets (the reduced
ResNet-18, ResNet-32): ~130,000 training images take 0.4 GB as uint8, 1.6 GB as float32. Validation is
a stratified part of the training images.
"""

from __future__ import annotations

from pathlib import Path

from growsearch.data.base import BaseDataset, missing_data, require_root
from growsearch.data.images import folder_dataset, images_under
from growsearch.errors import DataError

FOLDER = "imagenet100"
SIZE = 32
HINT = (
    "growsearch does not download ImageNet-100: put the subset's class folders under "
    "imagenet100/train/<class>/ and imagenet100/val/<class>/ (an ImageFolder layout)"
)


def load(benchmark: str, data_root: str | Path | None, download: bool, val_fraction: float) -> BaseDataset:
    """The train folder (minus a stratified validation part) and the val folder as test."""
    root = require_root(benchmark, data_root)
    train_dir, val_dir = root / FOLDER / "train", root / FOLDER / "val"
    for path in (train_dir, val_dir):
        if not path.is_dir():
            raise missing_data(benchmark, root, path, HINT)
    try:
        classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
        if not classes:
            raise DataError(f"{str(train_dir)!r} holds no class folders; expected train/<class>/*.JPEG")
        train, test = _scan(train_dir, classes), _scan(val_dir, classes)
        stamp = tuple(d.stat().st_mtime_ns for top in (train_dir, val_dir) for d in (top, *top.iterdir()))
        return folder_dataset("imagenet100", train, test, stamp, SIZE, False, val_fraction)
    except DataError as exc:
        raise DataError(f"benchmark {benchmark!r}: {exc}") from exc


def _scan(top: Path, classes: list[str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """(paths, labels) of every class folder under `top`, classes in order, files sorted."""
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = top / name
        files = images_under(folder) if folder.is_dir() else []
        if not files:
            raise DataError(
                f"{str(folder)!r} holds no images; every class of train/ needs images in {top.name}/"
            )
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    return tuple(paths), tuple(labels)
