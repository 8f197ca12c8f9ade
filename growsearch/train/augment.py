"""Training-time augmentation on batched tensors: random crop with padding and horizontal flip, the
CIFAR / TinyImageNet protocol of the continual-learning literature (PyCIL's and Mammoth's
RandomCrop(32 or 64, padding=4) + RandomHorizontalFlip, without PyCIL's brightness jitter).

One batch at a time on whichever device the batch is on, with no per-image Python: the batch is padded
once, each sample's crop gathered by advanced indexing, the flips chosen by a per-sample mask
(torch.where). The random draws (per sample: crop offsets, then whether to flip) come from the
generator the caller passes; `batch_generator(seed, task, step)` makes one from integers, so a resumed
run draws the same crops for the same step. Draws are made on the generator's device: a CPU generator
(the default) draws the same whatever device trains, and its few integers go to the GPU through pinned
memory without waiting for the GPU's queue.

Padding is torchvision's zero padding of the image *before* normalisation: on a stream the loader
normalised, `default_augmentation` fills with what black becomes ((0 - mean) / std per channel), so an
augmented batch equals torchvision's pipeline (pad, crop, flip, ToTensor, Normalize) to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from growsearch.errors import ConfigError

_AUGMENT = 0x61756720  # purpose mixed into the per-batch seed


@dataclass(frozen=True)
class Augmentation:
    """Random crop of the input size from the image padded by `crop_padding` on every side (0: no
    crop), then a horizontal flip with probability 1/2 if `flip`. `fill`: the padding's value, one for
    all channels or one per channel."""

    crop_padding: int
    flip: bool
    fill: float | tuple[float, ...] = 0.0

    def __post_init__(self) -> None:
        if (
            not isinstance(self.crop_padding, int)
            or isinstance(self.crop_padding, bool)
            or self.crop_padding < 0
        ):
            raise ConfigError(f"crop_padding={self.crop_padding!r} is not allowed: expected an integer >= 0")
        if not isinstance(self.flip, bool):
            raise ConfigError(f"flip={self.flip!r} is not allowed: expected true or false")
        numbers = self.fill if isinstance(self.fill, tuple) else (self.fill,)
        if not numbers or any(not isinstance(v, int | float) or isinstance(v, bool) for v in numbers):
            raise ConfigError(f"fill={self.fill!r} is not allowed: expected a number or a tuple of numbers")

    @property
    def active(self) -> bool:
        """Whether apply changes anything."""
        return self.crop_padding > 0 or self.flip

    def apply(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """An augmented copy of the (n, C, H, W) batch `x`: same shape, dtype, device and memory format."""
        if x.dim() != 4:
            raise ValueError(f"augmentation expects an (n, C, H, W) batch, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        if not self.active or not n:
            return x.clone()
        if self.crop_padding and not isinstance(self.fill, int | float) and len(self.fill) != c:
            raise ValueError(f"fill holds {len(self.fill)} values for a batch of {c} channels")
        dy, dx, flips = _to_device(self._draw(n, generator), x.device)
        out = x
        if self.crop_padding:
            p = self.crop_padding
            padded = self._pad(x, p)
            rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
            samples = torch.arange(n, device=x.device)[:, None, None, None]
            channels = torch.arange(c, device=x.device)[None, :, None, None]
            out = padded[samples, channels, rows, cols]
        if self.flip:
            out = torch.where(flips.bool()[:, None, None, None], out.flip(3), out)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(3, n) int64 on the generator's device: row offset, column offset (in 0..2p) and flip (0 / 1)
        per sample, drawn in that order (offsets only with a crop, flips only with a flip)."""
        draws = torch.zeros((3, n), dtype=torch.int64, device=generator.device)
        if self.crop_padding:
            high = 2 * self.crop_padding + 1
            draws[:2] = torch.randint(0, high, (2, n), generator=generator, device=generator.device)
        if self.flip:
            draws[2] = torch.randint(0, 2, (n,), generator=generator, device=generator.device)
        return draws

    def _pad(self, x: torch.Tensor, p: int) -> torch.Tensor:
        if isinstance(self.fill, int | float):
            return F.pad(x, (p, p, p, p), value=float(self.fill))
        n, c, h, w = x.shape
        padded = x.new_empty((n, c, h + 2 * p, w + 2 * p))
        for channel, value in enumerate(self.fill):  # scalar fills: nothing copied to the device
            padded[:, channel].fill_(value)
        padded[:, :, p : p + h, p : p + w] = x
        return padded


def _to_device(draws: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The draws on the batch's device. From the CPU to a GPU through pinned memory, asynchronously:
    a plain copy would wait for the GPU's queued work every batch."""
    if draws.device == device:
        return draws
    if draws.device.type == "cpu" and device.type == "cuda":
        return draws.pin_memory().to(device, non_blocking=True)
    return draws.to(device)


def batch_generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded from integers (the run seed, the task, the step, ...): the same keys draw the
    same augmentation, whatever ran before; different keys draw independently (numpy's SeedSequence
    mixes them)."""
    if not keys or any(not isinstance(k, int) or isinstance(k, bool) or k < 0 for k in keys):
        raise ValueError(f"batch_generator needs integers >= 0, got {keys!r}")
    state = np.random.SeedSequence([*keys, _AUGMENT]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=device)
    generator.manual_seed((int(state[0]) << 31) ^ int(state[1]))  # below 2**63
    return generator


def augments_by_default(benchmark: str) -> bool:
    """Whether `benchmark` trains with augmentation unless told otherwise: the RGB image benchmarks
    (CIFAR-10/100, TinyImageNet, ImageNet-100) do; digits, MNIST and sequences do not."""
    from growsearch.data.benchmarks import get_benchmark_info

    return get_benchmark_info(benchmark).crop_padding is not None


def default_augmentation(benchmark: str, *, normalized: bool = True) -> Augmentation | None:
    """The literature's augmentation for `benchmark` (None where it does not augment by default):
    random crop with padding 4 (CIFAR's 32x32, TinyImageNet's 64x64 and ImageNet-100's 32x32 alike)
    and a horizontal flip. `normalized`: the stream's inputs were normalised by the loader (the
    default), so the padding is filled with black's normalised value per channel; else with 0."""
    from growsearch.data.benchmarks import get_benchmark_info

    info = get_benchmark_info(benchmark)
    if info.crop_padding is None:
        return None
    fill: float | tuple[float, ...] = 0.0
    if normalized and info.normalization is not None:
        fill = info.normalization.black()
    return Augmentation(crop_padding=info.crop_padding, flip=True, fill=fill)


def training_augmentation(setting: str, benchmark: str, *, normalized: bool) -> Augmentation | None:
    """What `training.augment` asks for on `benchmark`: "auto", the literature's where it augments (None
    elsewhere); "none"; "crop-flip", random crop with padding 4 and a flip on any image benchmark."""
    if setting == "none":
        return None
    default = default_augmentation(benchmark, normalized=normalized)
    if setting == "auto" or default is not None:
        return default
    return Augmentation(crop_padding=4, flip=True)
