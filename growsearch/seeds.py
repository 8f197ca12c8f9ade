"""Seeds derived from a run's seed: what a trial draws depends on neither the process nor its history."""

from __future__ import annotations

import functools
import hashlib

import torch


def derived_seed(*parts: object) -> int:
    """A 32-bit seed for (run seed, task, trial, ...): the same parts give the same seed everywhere."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def seed_torch(seed: int) -> None:
    """`torch.manual_seed(seed)`, without its cost where this process can use no accelerator: there torch
    queues each absent device's seeding with a stack trace (about half a millisecond a call, once per
    trial), for devices that never start. The CPU's generator is seeded alike."""
    if _accelerators():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)


@functools.cache
def _accelerators() -> bool:
    """Whether this process can see a GPU (CUDA, Intel XPU, Apple MPS)."""
    xpu = getattr(torch, "xpu", None)
    return (
        torch.cuda.is_available()
        or (xpu is not None and xpu.is_available())
        or torch.backends.mps.is_available()
    )
