"""Learning-rate schedules over one training (a candidate's, a commit's retraining): the factor the YAML's
rate is multiplied by at each optimiser step, as the CIFAR protocols of the papers set it.

- "cosine": from 1 to 0 over the training (Loshchilov & Hutter 2017, without restarts), per step;
- "multistep": times `gamma` after each milestone epoch (epochs counted from 1, as PyTorch's MultiStepLR
  stepped per epoch);
- `warmup_epochs`: a linear rise from 1/(warm-up steps) to 1 over the first epochs, before either.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

from growsearch.config.training import TrainingConfig

Schedule = Callable[[int], float]  # 0-based optimiser step -> factor of the learning rate


def lr_schedule(config: TrainingConfig, epochs: int, steps_per_epoch: int) -> Schedule | None:
    """The training's schedule, or None for a constant rate (the trainer then steps nothing extra)."""
    warmup = config.warmup_epochs * steps_per_epoch
    if config.schedule == "none" and warmup == 0:
        return None
    total = max(epochs * steps_per_epoch, 1)
    milestones = [m * steps_per_epoch for m in config.milestones]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            done = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        if config.schedule == "multistep":
            return config.gamma ** bisect.bisect_right(milestones, step)
        return 1.0

    return factor
