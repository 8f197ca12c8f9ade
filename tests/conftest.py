"""Shared fixtures (helpers live in tiny_runs.py, importable from every test folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from growsearch.data.benchmarks import load_benchmark
from growsearch.runner import start_run

from tiny_runs import tiny_options, tiny_space


@pytest.fixture
def run_tiny(tmp_path: Path):
    """Run a method end to end on split-digits (5 tasks x 2 classes, 80 training samples per task)."""

    def run(method: str, name: str = "run", seed: int = 0, **sections: Any):
        return start_run(tiny_space(method, **sections), tiny_options(seed=seed), tmp_path / name)

    return run


@pytest.fixture(scope="session")
def digits_stream():
    return load_benchmark("split-digits", max_per_task=80, seed=0)
