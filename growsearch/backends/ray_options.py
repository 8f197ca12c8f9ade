"""How a run joins Ray (`--backend ray`): options of the command line, kept apart from the run's own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # the cluster to join (None: $RAY_ADDRESS, else a local Ray instance)
    shared_fs: bool = False  # the run folder is on a filesystem every node of the cluster sees
    local_cpus: int | None = None  # without an address: CPUs of the local Ray instance
