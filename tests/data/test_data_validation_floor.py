"""The floor on each task's validation samples: met by moving training samples where a task's training
split can spare a tenth of them, left (and said) where the data does not allow it, recorded in the run."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from growsearch.config.run_options import RunOptions
from growsearch.config.space import load_space
from growsearch.errors import ConfigError
from growsearch.runner import load_stream, resolve_options, start_run
from growsearch.store.run_folder import CONFIG_FILE

from tiny_runs import tiny_options, tiny_space


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


def _stream(**options):
    return load_stream(resolve_options(load_space("mntdp-d"), RunOptions(**options)))


def test_a_small_validation_split_is_raised_to_the_floor_from_the_tasks_training_samples():
    """split-mnist5k with 5 % held out: 50 validation samples a task, raised to 100 from its 800 to train."""
    plain = _stream(benchmark="split-mnist5k", val_fraction=0.05, min_val_per_task=0)
    floored = _stream(benchmark="split-mnist5k", val_fraction=0.05)
    assert plain.validation is None
    assert floored.validation == {"floor": 100, "per_task": [100] * 5, "raised": [0, 1, 2, 3, 4], "below": []}
    for before, after in zip(plain.tasks, floored.tasks, strict=True):
        assert len(after.val) == 100 and len(after.train) == len(before.train) - 50
        assert torch.equal(after.val.x[:50], before.val.x)  # the held-out samples stay
        moved = _rows(after.val.x[50:])
        assert moved <= _rows(before.train.x) and not moved & _rows(after.train.x)  # moved, not copied
        assert torch.equal(after.test.x, before.test.x)
    again = _stream(benchmark="split-mnist5k", val_fraction=0.05)
    other_seed = _stream(benchmark="split-mnist5k", val_fraction=0.05, seed=1)
    assert torch.equal(again.tasks[0].val.x, floored.tasks[0].val.x)  # seeded
    assert not torch.equal(other_seed.tasks[0].val.x, floored.tasks[0].val.x)


def test_where_the_data_does_not_allow_the_floor_the_splits_stay_and_the_run_says_so(tmp_path):
    """split-digits holds about 54 validation samples a task against some 250 to train on: 46 more would
    take more than a tenth of them, so every task keeps its split; split-mnist5k's 150 already meet it."""
    plain = _stream(benchmark="split-digits", min_val_per_task=0)
    floored = _stream(benchmark="split-digits")
    assert floored.validation["below"] == [0, 1, 2, 3, 4] and floored.validation["raised"] == []
    for before, after in zip(plain.tasks, floored.tasks, strict=True):
        assert torch.equal(after.train.x, before.train.x) and torch.equal(after.val.x, before.val.x)
    assert _stream(benchmark="split-mnist5k").validation["raised"] == []
    result = start_run(tiny_space("mntdp-d", training={"epochs": 1}), tiny_options(), tmp_path / "run")
    config = yaml.safe_load((result.path / CONFIG_FILE).read_text())
    assert config["run"]["min_val_per_task"] == 100 and config["validation"]["below"] == [0, 1, 2, 3, 4]
    for record in result.records:  # each commit's margin is counted in the samples it had
        assert record.decision["validation_samples"] == config["validation"]["per_task"][record.task]


def test_a_floor_must_be_a_count():
    with pytest.raises(ConfigError, match="min_val_per_task"):
        start_run(tiny_space("mntdp-d"), dataclasses.replace(tiny_options(), min_val_per_task=-1), None)
