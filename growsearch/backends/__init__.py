"""Where a task's trials run: `optuna` (in this process, the default) or `ray` (Ray Tune on a cluster).

A backend has `run_trials(TaskTrials)` and `close()` (`growsearch.search.backend`).
"""

from __future__ import annotations

from pathlib import Path

from growsearch.backends.optuna_backend import OptunaBackend
from growsearch.config.space import BackendConfig
from growsearch.errors import UnknownNameError
from growsearch.search.backend import Backend

BACKENDS = ("optuna", "ray")


def make_backend(
    name: str,
    *,
    run_path: Path,
    config: BackendConfig,
    address: str | None = None,
    shared_fs: bool = False,
    local_cpus: int | None = None,
) -> Backend:
    if name == "optuna":
        return OptunaBackend()
    if name == "ray":
        from growsearch.backends.ray_backend import RayBackend

        return RayBackend(run_path, config, address=address, shared_fs=shared_fs, local_cpus=local_cpus)
    raise UnknownNameError("backend", name, BACKENDS)


__all__ = ["BACKENDS", "OptunaBackend", "make_backend"]
