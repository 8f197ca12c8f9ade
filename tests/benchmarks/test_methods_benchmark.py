"""The methods benchmark (benchmarks/methods.py) says which method diverged under its protocol and goes on
with the others' rows, instead of losing the whole table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from growsearch.errors import TrainingError
from growsearch.runner import RunOptions

ROOT = Path(__file__).parents[2]


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("methods_benchmark", ROOT / "benchmarks" / "methods.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_a_method_that_diverges_loses_its_row_only(monkeypatch, capsys):
    methods = _benchmark_module()

    def diverges(method, options, epochs, storage=None):
        raise TrainingError("task 0, trial 0: the training loss became nan at epoch 2, step 9")

    monkeypatch.setattr(methods, "run_growsearch", diverges)
    options = RunOptions(benchmark="split-digits", seed=0)
    assert methods.measure("pathnet", options, None, 1, 1, avalanche=False) == []
    assert "growsearch pathnet failed, row skipped: task 0, trial 0" in capsys.readouterr().out
