"""Methods: one module each (`pnn.py`, `packnet.py`, ...), found by name; algorithms that serve one method
(PathNet's tournament, the REINFORCE controller, DARTS, MNTDP's prior) live in `algorithms/`. Names are
imported on first use, so listing methods does not load torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Candidate": "growsearch.methods.base",
    "Decisions": "growsearch.methods.base",
    "Method": "growsearch.methods.base",
    "Retrain": "growsearch.methods.base",
    "TaskContext": "growsearch.methods.base",
    "get_method": "growsearch.methods.registry",
    "method_infos": "growsearch.methods.registry",
    "method_names": "growsearch.methods.registry",
    "register_method": "growsearch.methods.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'growsearch.methods' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
