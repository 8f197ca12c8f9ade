"""A real run killed with SIGKILL mid-task, then resumed: nothing committed or completed is redone, and
the result equals an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import optuna

from growsearch.cli import _Signals, interrupt_line
from growsearch.runner import resume_run, resume_summary, start_run
from growsearch.store.run_folder import RunFolder

from tiny_runs import kill, start_cli_run, tiny_options, tiny_space, wait_for

KILL_TASK = 2


def _snapshot(run: Path) -> dict:
    storage = RunFolder.open(run).storage()
    trials = {}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials():
            trials[(summary.study_name, t.number)] = (t.state, t.value, t.datetime_complete)
    records = {p.parent.name: p.read_bytes() for p in (run / "tasks").glob("*/record.json")}
    return {"trials": trials, "records": records}


def test_sigkill_mid_task_then_resume_completes_without_redoing_work(tmp_path):
    space = tiny_space("mntdp-d", training={"epochs": 12})  # trials long enough to be caught mid-task
    run = tmp_path / "runs" / "killed"
    process = start_cli_run(space, run, "--max-per-task", "80")
    # kill once the task's first candidate is trained and kept: later ones are still to run
    wait_for(lambda: (run / "trials" / str(KILL_TASK) / "0" / "checksums.json").exists(), process)
    kill(process)

    before = _snapshot(run)
    assert set(before["records"]) == {str(t) for t in range(KILL_TASK)}  # later tasks not committed yet
    assert (
        not (run / "metrics.json").exists()
        or json.loads((run / "metrics.json").read_text())["tasks_committed"] == KILL_TASK
    )

    # what resume says it keeps: interrupted trials are run again under new numbers, and it says so
    killed = optuna.load_study(study_name=f"task-{KILL_TASK}", storage=RunFolder.open(run).storage())
    trials = killed.get_trials()
    cut = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    kept = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    summary = resume_summary(run)
    assert f"task {KILL_TASK}: {kept} trial(s) finished and kept" in summary
    assert (f"{cut} interrupted, run again with their seeds as trials {len(trials)} on" in summary) == bool(
        cut
    )

    resumed = resume_run(run)
    after = _snapshot(run)

    # committed tasks were not redone: their records are byte-identical
    for task, content in before["records"].items():
        assert after["records"][task] == content
    # completed trials were not re-run: same state, value and completion time
    completed = {k: v for k, v in before["trials"].items() if v[0] == optuna.trial.TrialState.COMPLETE}
    assert completed and all(after["trials"][k] == v for k, v in completed.items())
    # the killed task still trained each candidate once to completion
    storage = RunFolder.open(run).storage()
    study = optuna.load_study(study_name=f"task-{KILL_TASK}", storage=storage)
    depths = sorted(
        t.params["reuse_depth"] for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    )
    assert depths == [0, 1, 2]
    # the metrics are complete and equal those of an uninterrupted run with the same seed
    assert resumed.metrics["tasks_committed"] == 5
    reference = start_run(space, tiny_options(), tmp_path / "reference")
    assert resumed.metrics["decisions"] == reference.metrics["decisions"]
    assert resumed.metrics["accuracy"] == reference.metrics["accuracy"]
    assert resumed.metrics["metrics"] == reference.metrics["metrics"]


def test_resume_of_a_finished_run_redoes_nothing(run_tiny, monkeypatch):
    result = run_tiny("pnn", training={"epochs": 1})
    before = _snapshot(result.path)
    again = resume_run(result.path)
    assert _snapshot(result.path) == before
    assert again.metrics["accuracy"] == result.metrics["accuracy"]

    # stopped between its last commit and the rewrite of its metrics: every task is committed, but the run
    # is not complete; the signal's line says to resume it, and the resume rewrites the metrics alone
    metrics_file = result.path / "metrics.json"
    complete = json.loads(metrics_file.read_text())
    committed = complete["tasks_committed"]
    metrics_file.write_text(json.dumps({**complete, "tasks_committed": committed - 1}))
    assert "the run is complete" not in resume_summary(result.path)
    signals = _Signals()
    signals.run = result.path
    monkeypatch.setattr("growsearch.cli.SIGNALS", signals)
    assert f"resume with `growsearch resume {result.path}`" in interrupt_line(signal.SIGTERM)
    resume_run(result.path)
    assert _snapshot(result.path) == before
    assert json.loads(metrics_file.read_text()) == complete
    assert "the run is complete" in resume_summary(result.path)
