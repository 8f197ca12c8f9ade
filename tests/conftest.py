"""Shared fixtures (helpers live in tiny_runs.py, importable from every test folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

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


@pytest.fixture(scope="module")
def one_thread():
    """Networks this small train several times faster on one torch thread (no thread pool spinning on cores
    that other processes hold); a killed CLI run started beside it runs on one thread too, so sums agree
    bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
