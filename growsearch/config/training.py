"""The `training:` section: how candidates train, and the optimiser settings the one factory builds from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from growsearch.config.schema import require

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

    def validate(self, where: str) -> None:
        require(self.lr > 0, f"{where}.lr", f"expected a number > 0, got {self.lr}")
        require(
            0 <= self.momentum < 1, f"{where}.momentum", f"expected a number in [0, 1), got {self.momentum}"
        )
        require(self.weight_decay >= 0, f"{where}.weight_decay", "expected a number >= 0")
        require(
            self.batch_size >= 1, f"{where}.batch_size", f"expected an integer >= 1, got {self.batch_size}"
        )
        require(self.epochs >= 1, f"{where}.epochs", f"expected an integer >= 1, got {self.epochs}")
        require(
            self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
            f"{where}.device",
            f"expected cpu, cuda, cuda:N or auto, got {self.device!r}",
        )

    def optimizer_settings(self, lr_scale: float = 1.0) -> OptimizerSettings:
        """The section's optimiser (momentum is SGD's; Adam ignores it)."""
        momentum = self.momentum if self.optimizer == "sgd" else 0.0
        return OptimizerSettings(self.optimizer, self.lr * lr_scale, momentum, self.weight_decay)
