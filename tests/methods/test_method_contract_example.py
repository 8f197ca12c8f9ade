"""The method contract's smallest complete example (docs/examples/decayed_columns.py) runs end to end as a
method defined outside the package: registered, decided, built, trained its own way, committed, recorded."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from growsearch.config.space import load_space
from growsearch.methods import registry
from growsearch.runner import RunOptions, start_run
from growsearch.store.run_folder import RunFolder

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"


def _example_method() -> type:
    spec = importlib.util.spec_from_file_location("decayed_columns", EXAMPLES / "decayed_columns.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a dataclass resolves its annotations through its module
    spec.loader.exec_module(module)
    return module.DecayedColumns


def test_the_contract_example_searches_its_penalty_and_keeps_old_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))  # registered for this test alone
    registry.register_method(_example_method())
    space = load_space(str(EXAMPLES / "decayed-columns.yaml"))
    options = RunOptions(benchmark="split-digits", n_tasks=2, max_per_task=80, seed=0)
    result = start_run(space, options, tmp_path / "run")
    assert [len(r.decisions) for r in result.records] == [1, 1]
    l2s = {r.decisions["l2"] for r in result.records}
    assert all(1e-5 <= l2 <= 1e-2 for l2 in l2s)
    assert all(r.mechanism["column_parameters"] > 0 for r in result.records)
    assert result.metrics["metrics"]["forgetting"] == 0.0  # old columns are frozen
    graph, _ = RunFolder.open(result.path).load_task(1)
    first, _ = RunFolder.open(result.path).load_task(0)
    for node_id, node in first.nodes():
        for name, value in node.weights.items():
            assert torch.equal(value, graph.node(node_id).weights[name]), (node_id, name)
