"""growsearch: continual learning with dynamic neural architectures, where every growth decision is a search.

Library entry points: `ModuleGraph` (the grown network as data), `grow` (growth operators),
`GrowthPipeline` (the per-task loop: one search per task), `load_space` (a method's search-space YAML),
`start_run` / `resume_run` with `RunOptions` and `RayOptions` (what the `growsearch` command does). They
are imported on first use, so that light commands (`growsearch --help`, `growsearch list`) start without
loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "GrowthPipeline": "growsearch.search.pipeline",
    "ModuleGraph": "growsearch.graph.module_graph",
    "RayOptions": "growsearch.backends.ray_options",
    "RunOptions": "growsearch.runner",
    "load_space": "growsearch.config.space",
    "resume_run": "growsearch.runner",
    "start_run": "growsearch.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'growsearch' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
