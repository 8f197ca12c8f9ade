"""Tiny finished runs shared by the report tests of one session (each method runs once, ~5 s)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from growsearch.runner import start_run

from tiny_runs import tiny_options, tiny_space

_RUNS: dict[str, Path] = {}
# Method options that keep a run to seconds (PathNet's paper defaults run 500 tournaments per task).
TINY_OPTIONS = {
    "pathnet": {
        "modules_per_layer": 4,
        "active_per_layer": 2,
        "population": 4,
        "generations": 4,
        "minibatches": 2,
    }
}


def finished_run(method: str, factory: pytest.TempPathFactory) -> Path:
    """A run of `method` on split-digits (5 tasks, 40 samples per task, one epoch), made once per session."""
    if method not in _RUNS:
        options = dataclasses.replace(tiny_options(), max_per_task=40)
        path = factory.getbasetemp() / "report-runs" / method
        space = tiny_space(method, training={"epochs": 1}, options=TINY_OPTIONS.get(method, {}))
        _RUNS[method] = start_run(space, options, path).path
    return _RUNS[method]


def copy_of(method: str, factory: pytest.TempPathFactory, target: Path) -> Path:
    """A private copy of a shared run, for tests that write into the run folder."""
    return Path(shutil.copytree(finished_run(method, factory), target))


def chromium_binary() -> str:
    """Headless Chromium; CI (.ci/run) installs Debian's `chromium` package when it is missing."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed: `apt-get install -y chromium` (CI's .ci/run installs it)")
