"""Where a task's trials run. A backend has one method, `optimize(study, objective, n_trials, callbacks)`."""

from __future__ import annotations

from growsearch.backends.optuna_backend import OptunaBackend
from growsearch.errors import UnknownNameError

BACKENDS = ("optuna",)


def make_backend(name: str, **options: object) -> OptunaBackend:
    if name == "optuna":
        return OptunaBackend(**options)
    raise UnknownNameError("backend", name, BACKENDS)


__all__ = ["BACKENDS", "OptunaBackend", "make_backend"]
