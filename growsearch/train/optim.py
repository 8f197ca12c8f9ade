"""The one optimiser factory: every optimiser growsearch steps is built here from `OptimizerSettings`
(the YAML's `training:` section, or a method's own settings such as DARTS's architecture optimiser)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from growsearch.config.training import OptimizerSettings


def make_optimizer(parameters: Iterable[nn.Parameter], settings: OptimizerSettings) -> torch.optim.Optimizer:
    params = list(parameters)
    if settings.name == "adam":
        return torch.optim.Adam(
            params, lr=settings.lr, betas=settings.betas, eps=settings.eps, weight_decay=settings.weight_decay
        )
    if settings.name == "rmsprop":
        return torch.optim.RMSprop(
            params,
            lr=settings.lr,
            alpha=settings.alpha,
            eps=settings.eps,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
