"""Writers of tiny but real dataset files in their standard layouts: MNIST idx, CIFAR python pickles,
TinyImageNet's official folders and an ImageNet-100 ImageFolder (flat-coloured JPEGs)."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from growsearch.data import cifar, mnist


def pattern(label: int, i: int, size: int) -> np.ndarray:
    """An image whose pixels encode its label: every pixel is 2 * label + (i % 2)."""
    return np.full(size, 2 * label + i % 2, dtype=np.uint8)


def _label_of(x) -> list[int]:
    return [int(round(float(v) * 255)) // 2 for v in x.reshape(len(x), -1)[:, 0]]


@pytest.fixture
def label_of():
    """label_of(x): the original labels `pattern` encoded in float images scaled to [0, 1]."""
    return _label_of


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file: magic 0x0000 08 <ndim>, big-endian dims, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _images_labels(per_class: int, n_classes: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([c for i in range(per_class) for c in range(n_classes)], dtype=np.uint8)
    images = np.stack([pattern(int(c), i, size) for i, c in enumerate(labels)])
    return images, labels


@pytest.fixture
def make_mnist_root():
    """Call (root, folder="MNIST", train_per_class=4, test_per_class=2) to write the four raw idx files."""

    def make(root: Path, folder: str = "MNIST", train_per_class: int = 4, test_per_class: int = 2) -> Path:
        paths = mnist.expected_files(root, folder)
        for (img, lab), per_class in zip(
            (paths[0:2], paths[2:4]), (train_per_class, test_per_class), strict=True
        ):
            images, labels = _images_labels(per_class, 10, 28 * 28)
            write_idx(img, images.reshape(-1, 28, 28))
            write_idx(lab, labels)
        return root

    return make


@pytest.fixture
def make_cifar_root():
    """Call (root, layout, train_per_class=4, test_per_class=1) to write CIFAR batches with pickle.dump."""

    def make(
        root: Path, layout: cifar.CifarLayout, train_per_class: int = 4, test_per_class: int = 1
    ) -> Path:
        folder = root / layout.folder
        folder.mkdir(parents=True, exist_ok=True)
        n = layout.n_classes
        images, labels = _images_labels(train_per_class, n, 3072)
        chunks = np.array_split(np.arange(len(labels)), len(layout.train_files))
        for name, chunk in zip(layout.train_files, chunks, strict=True):
            _dump(folder / name, {b"data": images[chunk], layout.label_key.encode(): labels[chunk].tolist()})
        images, labels = _images_labels(test_per_class, n, 3072)
        _dump(folder / layout.test_files[0], {b"data": images, layout.label_key.encode(): labels.tolist()})
        _dump(
            folder / layout.meta_file, {layout.names_key.encode(): [f"class{i}".encode() for i in range(n)]}
        )
        return root

    return make


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def colour_of(label: int) -> tuple[int, int, int]:
    """A flat colour that encodes a class id below 256 robustly through JPEG: 16-level steps in R and G."""
    return (16 * (label // 16) + 8, 16 * (label % 16) + 8, 128)


def _label_of_colour(x) -> list[int]:
    pixel = (x[:, :2, x.shape[2] // 2, x.shape[3] // 2] * 255).round().long()  # centre, R and G
    return [int(r) // 16 * 16 + int(g) // 16 for r, g in pixel.tolist()]


@pytest.fixture
def label_of_colour():
    """label_of_colour(x): the class ids `colour_of` encoded in float RGB images scaled to [0, 1]."""
    return _label_of_colour


def write_image(path: Path, label: int, size: tuple[int, int] = (64, 64)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour_of(label)).save(path, format="JPEG", quality=95)


def write_tinyimagenet(
    root: Path, train_per_class: int = 4, val_per_class: int = 1, n_classes: int = 200
) -> Path:
    """TinyImageNet's official layout under root; wnids.txt lists made-up wnids in an unsorted order,
    class i (line i) coloured colour_of(i)."""
    folder = root / "tiny-imagenet-200"
    wnids = [f"n{(i * 7919) % 100003:08d}" for i in range(n_classes)]  # not in sorted order
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    lines = []
    for label, wnid in enumerate(wnids):
        for i in range(train_per_class):
            write_image(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", label)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(val_per_class):
            name = f"val_{label * val_per_class + i}.JPEG"
            write_image(folder / "val" / "images" / name, label)
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    return root


def write_imagenet100(
    root: Path, train_per_class: int = 4, val_per_class: int = 1, n_classes: int = 100
) -> Path:
    """An ImageFolder under root/imagenet100/{train,val}/<class>/: class i (sorted folder i) coloured
    colour_of(i), images of assorted sizes (landscape, portrait, square; one in a nested folder)."""
    sizes = [(48, 40), (40, 56), (37, 37)]
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for label in range(n_classes):
            folder = root / "imagenet100" / split / f"n{label:08d}"
            for i in range(per_class):
                sub = folder / "nested" if i == 2 else folder
                write_image(sub / f"{split}_{label}_{i}.JPEG", label, sizes[i % len(sizes)])
    return root


@pytest.fixture
def make_tinyimagenet_root():
    """Call (root, train_per_class=4, val_per_class=1, n_classes=200): write_tinyimagenet."""
    return write_tinyimagenet


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A data root with all 200 TinyImageNet classes, 4 training and 1 validation image each (read-only:
    copy it to change it)."""
    return write_tinyimagenet(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory) -> Path:
    """A data root with an ImageNet-100 ImageFolder, 4 training and 1 validation image a class."""
    return write_imagenet100(tmp_path_factory.mktemp("in100"))
