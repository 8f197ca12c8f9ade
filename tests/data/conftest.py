"""Writers of tiny but real dataset files (MNIST idx, CIFAR python pickles) in torchvision's layout."""

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
