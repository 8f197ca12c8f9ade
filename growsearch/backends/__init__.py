"""Where a task's trials run: `optuna` (in this process, the default) or `ray` (Ray Tune on a cluster).

A backend has `run_trials(TaskTrials)` and `close()` (`growsearch.search.trials`): it schedules trials and
hands each result back to the study through `search.trials`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from growsearch.backends.ray_options import RayOptions
from growsearch.config.space import BackendConfig
from growsearch.errors import UnknownNameError

if TYPE_CHECKING:
    from growsearch.search.trials import Backend

BACKENDS = ("optuna", "ray")


def make_backend(name: str, *, run_path: Path, config: BackendConfig, ray: RayOptions) -> Backend:
    # each backend imports what it runs with (torch, Optuna, Ray) when made: importing this package, or
    # RayOptions from it, loads none of them
    if name == "optuna":
        from growsearch.backends.optuna_backend import OptunaBackend

        return OptunaBackend()
    if name == "ray":
        from growsearch.backends.ray_backend import RayBackend

        return RayBackend(run_path, config, ray)
    raise UnknownNameError("backend", name, BACKENDS)


__all__ = ["BACKENDS", "RayOptions", "make_backend"]
