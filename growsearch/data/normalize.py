"""Per-dataset input normalisation: (x - mean) / std per channel, on inputs already scaled to [0, 1].

Plain data (no torch at import), so the registry can name each base's statistics. The values are those
the continual-learning literature normalises with, as torchvision's Normalize after ToTensor does:
- CIFAR-10: Mammoth's seq-cifar10 (the training set's per-channel mean and std). PyCIL's iCIFAR10 uses
  std (0.2023, 0.1994, 0.2010), a widely copied value that is not the per-channel std;
- CIFAR-100: PyCIL's iCIFAR100 and Mammoth's seq-cifar100 (the same values);
- TinyImageNet: Mammoth's seq-tinyimg;
- ImageNet (for ImageNet-100): torchvision's ImageNet statistics, as PyCIL's iImageNet100 uses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std of a dataset's [0, 1] inputs."""

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel of a float (n, C, H, W) batch (a new tensor; the same float32
        operations as torchvision's Normalize)."""
        shape = (1, len(self.mean), 1, 1)
        return x.sub(x.new_tensor(self.mean).reshape(shape)).div_(x.new_tensor(self.std).reshape(shape))

    def invert(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1]: x * std + mean per channel (a new tensor)."""
        shape = (1, len(self.mean), 1, 1)
        return x * x.new_tensor(self.std).reshape(shape) + x.new_tensor(self.mean).reshape(shape)

    def black(self) -> tuple[float, ...]:
        """What a black pixel (0 in every channel) becomes: the fill of torchvision's zero padding
        applied before normalisation."""
        return tuple(-m / s for m, s in zip(self.mean, self.std, strict=True))


CIFAR10_STATS = Normalization("cifar10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615))
CIFAR100_STATS = Normalization("cifar100", (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
TINYIMAGENET_STATS = Normalization("tinyimagenet", (0.4802, 0.4480, 0.3975), (0.2770, 0.2691, 0.2821))
IMAGENET_STATS = Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
