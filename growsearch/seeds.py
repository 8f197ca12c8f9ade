"""Seeds derived from a run's seed: what a trial draws depends on neither the process nor its history."""

from __future__ import annotations

import hashlib


def derived_seed(*parts: object) -> int:
    """A 32-bit seed for (run seed, task, trial, ...): the same parts give the same seed everywhere."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")
