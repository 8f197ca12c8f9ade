"""A block of journal writes (a trial's attributes, a pack's, a trial's params) is one append to the run's
journal, in order, and lands also when the block raises; outside a block every write is its own append."""

from __future__ import annotations

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend

from growsearch.journal_writes import together
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import write_attrs


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
