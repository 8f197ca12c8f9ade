"""A block of journal writes (a trial's attributes, a pack's, a trial's params, a pack's tells) is one append
to the run's journal, in order, and lands also when the block raises; outside a block every write is its
own append."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from growsearch.journal_writes import together
from growsearch.search.trials import TaskTrials, TrialReport, tell_each
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import ERROR, write_attrs


@pytest.fixture
def appends(monkeypatch):
    """Each append the run's journal file receives: the records it carries."""
    seen: list[list[dict]] = []
    append = JournalFileBackend.append_logs

    def counted(backend, logs):
        seen.append(list(logs))
        return append(backend, logs)

    monkeypatch.setattr(JournalFileBackend, "append_logs", counted)
    return seen


def _study(tmp_path):
    run = RunFolder.create(tmp_path / "run", {"space": {"search": {"storage": "journal"}}, "run": {}})
    run.lock()
    return run, optuna.create_study(study_name="task-0", storage=run.storage())


def test_a_trial_s_attributes_reach_the_journal_in_one_append_in_order(tmp_path, appends):
    run, study = _study(tmp_path)
    trial = study.ask()
    before = len(appends)
    write_attrs(trial, {"a": 1, "b": [2, 3], "c": "four"})
    assert len(appends) == before + 1
    assert [next(iter(log["user_attr"])) for log in appends[-1]] == ["a", "b", "c"]
    trial.set_user_attr("alone", True)  # outside a block: its own append
    assert len(appends) == before + 2
    study.tell(trial, 0.5)
    reread = optuna.load_study(study_name="task-0", storage=RunFolder.open(run.path).storage())
    assert reread.trials[0].user_attrs == {"a": 1, "b": [2, 3], "c": "four", "alone": True}
    run.unlock()


def test_a_block_that_raises_still_writes_what_it_held(tmp_path, appends):
    run, study = _study(tmp_path)
    trial = study.ask()
    before = len(appends)
    with pytest.raises(KeyboardInterrupt), together():
        trial.set_user_attr("kept", 1)
        with together():  # a nested block joins the outer one
            trial.set_user_attr("also kept", 2)
        assert len(appends) == before  # held until the block ends
        raise KeyboardInterrupt
    assert len(appends) == before + 1 and len(appends[-1]) == 2
    reread = optuna.load_study(study_name="task-0", storage=RunFolder.open(run.path).storage())
    assert reread.trials[0].user_attrs == {"kept": 1, "also kept": 2}
    run.unlock()


def _pack_trials(study, seen):
    """A pack's TaskTrials (single objective) whose `on_trial` notes each trial it is handed."""
    return TaskTrials(
        study,
        SimpleNamespace(objectives=("accuracy",)),  # a job's objectives: what `tell` reads of it
        3,
        save_trial=lambda task, number, graph: None,
        on_trial=lambda _, trial: seen.append((trial.number, trial.state, dict(trial.user_attrs))),
    )


def test_a_pack_s_reports_and_states_reach_the_journal_in_one_append_then_each_trial_is_reported(
    tmp_path, appends
):
    run, study = _study(tmp_path)
    asked = [study.ask() for _ in range(3)]
    seen: list = []
    reports = [
        TrialReport("complete", {"kind": "done"}, [0.5]),
        TrialReport("pruned", {"kind": "stopped"}),
        TrialReport("failed", {ERROR: "the loss became nan"}),
    ]
    told: set[int] = set()
    before = len(appends)
    layout = [{"id": "t1/L0", "inputs": ["input"]}]  # the template the pack trained in
    tell_each(_pack_trials(study, seen), zip(asked, reports, strict=True), told, layout)
    assert len(appends) == before + 1  # the layout, three trials' attributes and states
    assert "pack_layout" in appends[-1][0]["user_attr"]  # before any tell
    assert told == {0, 1, 2}
    assert seen == [  # each handed on as the journal holds it once written
        (0, TrialState.COMPLETE, {"pack_layout": layout, "kind": "done"}),
        (1, TrialState.PRUNED, {"kind": "stopped"}),
        (2, TrialState.FAIL, {ERROR: "the loss became nan"}),
    ]
    reread = optuna.load_study(study_name="task-0", storage=RunFolder.open(run.path).storage())
    assert [t.state for t in reread.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    run.unlock()


def test_a_pack_interrupted_while_its_reports_are_made_keeps_the_tells_already_made(tmp_path, appends):
    run, study = _study(tmp_path)
    asked = [study.ask() for _ in range(3)]
    seen: list = []

    def reports():
        yield asked[0], TrialReport("complete", {"kind": "done"}, [0.5])
        raise KeyboardInterrupt  # Ctrl-C while the second trial's candidate is kept

    told: set[int] = set()
    with pytest.raises(KeyboardInterrupt):
        tell_each(_pack_trials(study, seen), reports(), told)
    assert told == {0} and seen == [(0, TrialState.COMPLETE, {"kind": "done"})]
    reread = optuna.load_study(study_name="task-0", storage=RunFolder.open(run.path).storage())
    assert [t.state for t in reread.trials] == [TrialState.COMPLETE, TrialState.RUNNING, TrialState.RUNNING]
    run.unlock()
