"""Seeding torch for a trial: `seed_torch` leaves the CPU's generator where `torch.manual_seed` leaves it, so
what a candidate draws (its initial weights, its batches) is the same either way."""

from __future__ import annotations

import torch

from growsearch.seeds import derived_seed, seed_torch


def _draws() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(5), torch.randperm(9)


def test_seed_torch_draws_what_torch_manual_seed_draws():
    seed = derived_seed(0, 1, 2)
    seed_torch(seed)
    ours = _draws()
    torch.manual_seed(seed)
    theirs = _draws()
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    seed_torch(seed + 1)
    assert not torch.equal(_draws()[0], ours[0])
