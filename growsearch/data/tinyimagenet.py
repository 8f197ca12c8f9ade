"""TinyImageNet (200 classes, 64x64 RGB) from a data root in its official layout (the unzipped
tiny-imagenet-200.zip):

    ROOT/tiny-imagenet-200/wnids.txt                      the 200 class ids, one a line
    ROOT/tiny-imagenet-200/train/<wnid>/images/*.JPEG     500 training images a class
    ROOT/tiny-imagenet-200/val/images/*.JPEG              50 a class, labelled by
    ROOT/tiny-imagenet-200/val/val_annotations.txt        <file> <wnid> <box>, tab-separated

A class's id is its line in wnids.txt (Mammoth's seq-tinyimg takes the classes in that order). The
official validation images are the test split (the official test images have no labels); validation is
a stratified part of the training images. Images are read with PIL and kept as uint8 (110,000 images:
1.35 GB) until the stream scales them to float32.
"""

from __future__ import annotations

from pathlib import Path

from growsearch.data.base import BaseDataset, missing_data, require_root
from growsearch.data.images import folder_dataset, is_image
from growsearch.errors import DataError

FOLDER = "tiny-imagenet-200"
SIZE = 64
N_CLASSES = 200
HINT = (
    "growsearch does not download TinyImageNet: unzip tiny-imagenet-200.zip "
    "(http://cs231n.stanford.edu/tiny-imagenet-200.zip) into the data root"
)


def load(benchmark: str, data_root: str | Path | None, download: bool, val_fraction: float) -> BaseDataset:
    """Official train (minus a stratified validation part) and the official validation images as test."""
    root = require_root(benchmark, data_root)
    folder = root / FOLDER
    wnids_file, annotations = folder / "wnids.txt", folder / "val" / "val_annotations.txt"
    for path in (wnids_file, annotations):
        if not path.is_file():
            raise missing_data(benchmark, root, path, HINT)
    try:
        train, test = _scan(folder, wnids_file, annotations)
        stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) for p in (wnids_file, annotations))
        return folder_dataset("tinyimagenet", train, test, stamp, SIZE, True, val_fraction)
    except DataError as exc:
        raise DataError(f"benchmark {benchmark!r}: {exc}") from exc


def _scan(folder: Path, wnids_file: Path, annotations: Path) -> tuple[tuple, tuple]:
    """((train paths, labels), (val paths, labels)), paths as sorted strings."""
    wnids = [line.strip() for line in wnids_file.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise DataError(f"{str(wnids_file)!r} names a class twice; not TinyImageNet's wnids.txt")
    index = {w: i for i, w in enumerate(wnids)}
    train_paths, train_labels = [], []
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        files = sorted(p for p in images.iterdir() if is_image(p)) if images.is_dir() else []
        if not files:
            raise DataError(
                f"{str(images)!r} holds no images; expected TinyImageNet's train/<wnid>/images/*.JPEG"
            )
        train_paths += [str(p) for p in files]
        train_labels += [index[wnid]] * len(files)
    val = []
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        fields = line.split("\t") if "\t" in line else line.split()
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(
                f"{str(annotations)!r} line {number}: expected '<file>\\t<wnid>\\t<box>' with a wnid of "
                f"wnids.txt, found {line.strip()[:60]!r}"
            )
        val.append((str(folder / "val" / "images" / fields[0]), index[fields[1]]))
    if not val:
        raise DataError(f"{str(annotations)!r} lists no validation images")
    val.sort()
    return (tuple(train_paths), tuple(train_labels)), (tuple(p for p, _ in val), tuple(c for _, c in val))
