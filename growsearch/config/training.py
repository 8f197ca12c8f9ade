"""The `training:` section: how candidates train, and the optimiser settings the one factory builds from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from growsearch.config.schema import require, require_at_most

FLOAT32_MAX = 3.4028234663852886e38  # an optimiser step computes in float32: a rate past it cannot be held

OptimizerName = Literal["sgd", "adam", "rmsprop"]


@dataclass(frozen=True)
class OptimizerSettings:
    """Everything `growsearch.train.optim.make_optimizer` needs; every optimiser in growsearch is one."""

    name: OptimizerName = "sgd"
    lr: float = 0.1
    momentum: float = 0.0  # SGD and RMSProp
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)  # Adam
    alpha: float = 0.99  # RMSProp's smoothing constant
    eps: float = 1e-8


@dataclass(frozen=True)
class TrainingConfig:
    """How a candidate is trained (the `training:` section of a search-space YAML)."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 32
    epochs: int = 5
    device: str = "cpu"
    # the learning rate over a task's training (each candidate's, from its start): constant ("none"),
    # "cosine" (to zero, Loshchilov & Hutter), or "multistep" (times `gamma` at each of `milestones`, epochs
    # counted from 1); `warmup_epochs` rise linearly from zero first (PyCIL's and DER's CIFAR protocols)
    schedule: Literal["none", "cosine", "multistep"] = "none"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    # random crop (zero padding 4) and horizontal flip of training batches: "auto" where the benchmark's
    # literature augments (CIFAR, TinyImageNet, ImageNet-100; not the digit benchmarks), "none", or always
    augment: Literal["auto", "none", "crop-flip"] = "auto"
    # on CUDA "auto" trains in bf16 autocast with channels-last inputs and cuDNN's autotuner; "fp32" never
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def validate(self, where: str) -> None:
        require(self.lr > 0, f"{where}.lr", f"expected a number > 0, got {self.lr}")
        # a step computes in float32: a larger rate overflows on conversion (a traceback, not a NaN loss)
        for name in ("lr", "weight_decay", "gamma"):
            value = getattr(self, name)
            require(
                value <= FLOAT32_MAX,
                f"{where}.{name}",
                f"expected at most 3.4e38 (the largest float32, which an optimiser step uses), got {value:g}",
            )
        require(
            0 <= self.momentum < 1, f"{where}.momentum", f"expected a number in [0, 1), got {self.momentum}"
        )
        require(self.weight_decay >= 0, f"{where}.weight_decay", "expected a number >= 0")
        require(
            self.batch_size >= 1, f"{where}.batch_size", f"expected an integer >= 1, got {self.batch_size}"
        )
        require_at_most(self.batch_size, 2**31 - 1, f"{where}.batch_size", "a batch's largest size")
        require(self.epochs >= 1, f"{where}.epochs", f"expected an integer >= 1, got {self.epochs}")
        require_at_most(self.epochs, 100_000, f"{where}.epochs", "every candidate trains so long")
        require(self.gamma > 0, f"{where}.gamma", f"expected a number > 0, got {self.gamma}")
        require(self.warmup_epochs >= 0, f"{where}.warmup_epochs", "expected an integer >= 0")
        ordered = all(0 <= a < b for a, b in zip((0, *self.milestones), self.milestones, strict=False))
        require(
            ordered, f"{where}.milestones", f"expected increasing epochs >= 1, got {list(self.milestones)}"
        )
        require(
            self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
            f"{where}.device",
            f"expected cpu, cuda, cuda:N or auto, got {self.device!r}",
        )

    def optimizer_settings(self, lr_scale: float = 1.0) -> OptimizerSettings:
        """The section's optimiser (momentum is SGD's; Adam ignores it)."""
        momentum = self.momentum if self.optimizer == "sgd" else 0.0
        return OptimizerSettings(self.optimizer, self.lr * lr_scale, momentum, self.weight_decay)
