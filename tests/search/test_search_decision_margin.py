"""How clear each commit was: the runner-up, the validation gap in samples, and ties (one sample or less)
that the commit rule's preference for the smaller candidate broke, recorded per task and printed."""

from __future__ import annotations

import json

import optuna
import pytest

from growsearch.store.run_folder import RunFolder
from growsearch.task_record import TaskRecord, decision_margin

from tiny_runs import tiny_space


def test_the_margin_is_the_gap_to_the_best_other_candidate_in_validation_samples():
    assert decision_margin(0.90, [(0, 0.80), (1, 0.85)], 40) == {
        "runner_up_trial": 1,
        "accuracy_gap": pytest.approx(0.05),
        "samples": 2,
        "tie": False,
        "validation_samples": 40,
    }
    tie = decision_margin(0.80, [(3, 0.825), (2, 0.825)], 40)  # committed one sample below: size decided
    assert (tie["runner_up_trial"], tie["samples"], tie["tie"]) == (2, -1, True)
    assert decision_margin(0.9, [], 40)["tie"] is False


def test_each_committed_task_records_its_margin_against_the_study(run_tiny, digits_stream):
    result = run_tiny("mntdp-d", training={"epochs": 1})
    run = RunFolder.open(result.path)
    for record in run.records():
        study = optuna.load_study(study_name=f"task-{record.task}", storage=run.storage())
        others = [t for t in study.get_trials() if t.number != record.chosen_trial and t.values]
        decision = record.decision
        assert decision["validation_samples"] == len(digits_stream.tasks[record.task].val)
        if not others:
            assert decision["runner_up_trial"] is None
            continue
        runner_up = max(others, key=lambda t: (t.values[0], -t.number))
        assert decision["runner_up_trial"] == runner_up.number
        gap = record.val_accuracy - runner_up.values[0]
        assert decision["samples"] == round(gap * decision["validation_samples"])
        assert decision["tie"] == (abs(decision["samples"]) <= 1)
    # a record written before the margin was recorded still loads
    data = json.loads((result.path / "tasks" / "1" / "record.json").read_text())
    del data["decision"]
    assert TaskRecord.from_json(data).decision is None


def test_a_space_with_one_candidate_has_no_runner_up(tmp_path):
    from growsearch.runner import RunOptions, start_run

    options = RunOptions(benchmark="split-digits", n_tasks=2, max_per_task=80)
    result = start_run(tiny_space("pnn", training={"epochs": 1}), options, tmp_path / "r")
    assert [r.decision["runner_up_trial"] for r in RunFolder.open(result.path).records()] == [None, None]


def test_the_validation_share_is_a_setting_recorded_and_checked(tmp_path):
    from typer.testing import CliRunner

    from growsearch.cli import app
    from growsearch.runner import RunOptions, load_stream, start_run

    space = tiny_space("pnn", training={"epochs": 1}, benchmark={"val_fraction": 0.3})  # the YAML's
    options = RunOptions(benchmark="split-digits", n_tasks=2, max_per_task=80)
    result = start_run(space, options, tmp_path / "yaml")
    held_out = [r.decision["validation_samples"] for r in RunFolder.open(result.path).records()]
    default = [len(task.val) for task in load_stream(options).tasks]  # the loader's 0.15 of each pool
    assert all(2 * d - 2 <= h <= 2 * d + 2 for h, d in zip(held_out, default, strict=True)), (
        held_out,
        default,
    )
    assert RunFolder.open(result.path).config()["run"]["val_fraction"] == 0.3  # resolved and recorded
    refused = CliRunner().invoke(app, ["run", "pnn", "--val-fraction", "0.9", "--runs-dir", str(tmp_path)])
    assert refused.exit_code == 2 and "--val-fraction: expected a share" in refused.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["yaml"]  # nothing written for the refusal
