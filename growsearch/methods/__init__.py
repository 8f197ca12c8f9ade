"""Methods: one module each (`pnn.py`, `packnet.py`, ...), found by name; what only one method uses sits
beside it (`_NAME_*.py`: CCGN's gates, PathNet's tournament, Learn to Grow's DARTS); algorithms several
methods share (the REINFORCE policy, hard attention, weight masks, MNTDP's prior) live in `algorithms/`.
Every method module imports growsearch through `toolkit.py` alone. Names are imported on first use, so
listing methods does not load torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Candidate": "growsearch.methods.base",
    "Decisions": "growsearch.methods.base",
    "Method": "growsearch.methods.base",
    "Rehearsal": "growsearch.methods.base",
    "Retrain": "growsearch.methods.base",
    "SearchPlan": "growsearch.methods.base",
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
