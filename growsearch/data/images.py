"""Image files decoded into uint8 (n, 3, S, S) tensors with PIL (torchvision's default loader), on
threads (PIL releases the GIL while it decodes), for the image-folder benchmarks.

Two ways to reach S x S: `exact` (every image must already be S x S: TinyImageNet's 64x64) or
resize-and-crop (the shorter side resized to S, bilinear and antialiased as PIL's resize is, then the
centre S x S: torchvision's Resize(S) + CenterCrop(S)). For the latter a JPEG is first decoded at a
reduced DCT scale no smaller than S (PIL's draft mode, as Image.thumbnail does), several times faster
on ImageNet's ~400-pixel photos; the pixels differ slightly from a full-size decode resized.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from growsearch.data.base import BaseDataset, RawSplit, from_official
from growsearch.errors import DataError

Labelled = tuple[tuple[str, ...], tuple[int, ...]]  # (image paths, their labels)

IMAGE_EXTENSIONS = (
    ".jpg",
    ".jpeg",
    ".png",
    ".ppm",
    ".bmp",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
)  # ImageFolder's
_CHUNK = 256  # images one thread decodes per job


def is_image(path: Path) -> bool:
    """Whether `path` is a file with one of torchvision ImageFolder's image extensions."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def images_under(folder: Path) -> list[Path]:
    """The image files under `folder`, at any depth, sorted (ImageFolder's walk, made deterministic)."""
    return sorted(p for p in folder.rglob("*") if is_image(p))


def folder_dataset(
    name: str, train: Labelled, test: Labelled, stamp: tuple, size: int, exact: bool, val_fraction: float
) -> BaseDataset:
    """An image-folder benchmark's base dataset: `train` (minus a stratified validation part) and `test`
    decoded at `size` (`exact` or resized), kept decoded while the files' `stamp` is unchanged."""
    train_x, test_x = _decoded(train[0], test[0], size, exact, stamp)
    return from_official(
        name,
        RawSplit(train_x, torch.tensor(train[1], dtype=torch.int64)),
        RawSplit(test_x, torch.tensor(test[1], dtype=torch.int64)),
        255.0,
        val_fraction,
    )


@lru_cache(maxsize=1)  # the last data set read: a second run in one process decodes nothing again
def _decoded(
    train: tuple[str, ...], test: tuple[str, ...], size: int, exact: bool, stamp: tuple
) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        decode([Path(p) for p in train], size, exact=exact),
        decode([Path(p) for p in test], size, exact=exact),
    )


def decode(paths: Sequence[Path], size: int, *, exact: bool, workers: int | None = None) -> torch.Tensor:
    """uint8 (n, 3, size, size) images of `paths`; DataError naming the first file that fails."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def job(start: int) -> None:
        for i in range(start, min(start + _CHUNK, len(paths))):
            out[i] = _read(paths[i], size, exact).transpose(2, 0, 1)

    threads = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for result in [pool.submit(job, start) for start in range(0, len(paths), _CHUNK)]:
            result.result()  # re-raises a job's DataError
    return torch.from_numpy(out)


def _read(path: Path, size: int, exact: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if not exact:
                img.draft("RGB", (size, size))  # a JPEG decodes at 1/2, 1/4 or 1/8 scale, still >= size
            rgb = img.convert("RGB")  # greyscale and CMYK files occur in ImageNet and TinyImageNet
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot read {str(path)!r} as an image: {exc}") from None
    if exact:
        if rgb.size != (size, size):
            raise DataError(f"{str(path)!r} is {rgb.size[0]}x{rgb.size[1]}; expected {size}x{size}")
        return np.asarray(rgb)
    return np.asarray(resize_crop(rgb, size))


def resize_crop(img, size: int):  # PIL images in and out
    """torchvision's Resize(size) then CenterCrop(size) on a PIL image: the shorter side to `size`
    (bilinear, antialiased), the longer one truncated in proportion, then the centre size x size."""
    from PIL import Image

    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return img.crop((left, top, left + size, top + size))
