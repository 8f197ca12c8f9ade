"""Where a task's trials run: `optuna` (in this process, the default) or `ray` (Ray Tune on a cluster).

A backend has one method, `optimize(study, job, n_trials, save_trial, callbacks)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from growsearch.backends.optuna_backend import OptunaBackend
from growsearch.errors import UnknownNameError

if TYPE_CHECKING:
    from growsearch.search.space import SearchConfig

BACKENDS = ("optuna", "ray")


def make_backend(
    name: str,
    *,
    run_path: Path | None = None,
    search: SearchConfig | None = None,
    address: str | None = None,
    shared_fs: bool = False,
    local_cpus: int | None = None,
) -> Any:
    if name == "optuna":
        return OptunaBackend()
    if name == "ray":
        from growsearch.backends.ray_backend import RayBackend, TrialResources

        if run_path is None or search is None:
            raise ValueError("the ray backend needs the run folder and the search settings")
        return RayBackend(
            run_path,
            address=address,
            resources=TrialResources(
                search.cpus_per_trial, search.gpus_per_trial, search.memory_per_trial_mb
            ),
            max_concurrent=search.max_concurrent_trials,
            max_failures=search.max_failures,
            early_stopping=search.pruner != "none",
            reuse_workers=search.reuse_workers,
            shared_fs=shared_fs,
            local_cpus=local_cpus,
        )
    raise UnknownNameError("backend", name, BACKENDS)


__all__ = ["BACKENDS", "OptunaBackend", "make_backend"]
