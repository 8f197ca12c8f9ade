"""Benchmarks as task streams under the four continual-learning scenarios. Names are imported on first
use, so listing benchmarks and scenarios does not load torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DEFAULT_BENCHMARK": "growsearch.data.benchmarks",
    "BenchmarkInfo": "growsearch.data.benchmarks",
    "get_benchmark_info": "growsearch.data.benchmarks",
    "list_benchmarks": "growsearch.data.benchmarks",
    "load_benchmark": "growsearch.data.benchmarks",
    "SCENARIOS": "growsearch.data.scenarios",
    "Scenario": "growsearch.data.scenarios",
    "get_scenario": "growsearch.data.scenarios",
    "Split": "growsearch.data.task",
    "Task": "growsearch.data.task",
    "TaskStream": "growsearch.data.task",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'growsearch.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
