"""The journal damaged anywhere: a garbage line, a record with an unknown operation, a run of NUL bytes. The
run folder keeps what can be trusted (the records before the damage, every committed task), moves the rest
aside, says what was lost, and a resume commits what an uninterrupted run commits."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import load_file

from growsearch.runner import resume_run, start_run
from growsearch.store.journal import TrustedPrefix, repair_journal, scan_journal
from growsearch.store.run_folder import RunFolder

from tiny_runs import kill, start_cli_run, tiny_options, tiny_space, wait_for

SPACE = {"training": {"epochs": 6}}  # MNTDP-D: three candidates a task, long enough to be killed mid-task
OPTIONS = {"n_tasks": 2, "max_per_task": 40}
UNKNOWN_OP = b'{"op_code": 99, "worker_id": "w"}\n'


def _space():
    return tiny_space("mntdp-d", **SPACE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, one_thread):
    """The uninterrupted run every damaged one is compared with; a copy of it is the finished run."""
    root = tmp_path_factory.mktemp("journal")
    return start_run(_space(), dataclasses.replace(tiny_options(), **OPTIONS), root / "reference").path


@pytest.fixture(scope="module")
def killed(tmp_path_factory, reference):
    """The same run killed (SIGKILL) once task 1's first candidate is kept: its journal ends mid-task."""
    run = tmp_path_factory.mktemp("killed") / "run"
    process = start_cli_run(_space(), run, "--max-per-task", "40", "--tasks", "2", env=_one_thread_env())
    wait_for(lambda: (run / "trials" / "1" / "0" / "checksums.json").exists(), process)
    kill(process)
    assert (run / "tasks" / "0").is_dir() and not (run / "tasks" / "1").exists()
    return run


def _one_thread_env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _damage(journal: Path, offset: int, kind: int) -> None:
    data = journal.read_bytes()
    if kind == 0:  # a garbage line: bytes overwritten (a crashed filesystem, an editor)
        data = data[:offset] + b"\xff#garbage" + data[offset + 9 :]
    elif kind == 1:  # a valid JSON record of an operation Optuna does not know
        boundary = data.index(b"\n", offset) + 1
        data = data[:boundary] + UNKNOWN_OP + data[boundary:]
    else:  # 4 KB of NUL bytes (what a power cut leaves in a file's last blocks)
        data = data[:offset] + b"\0" * 4096 + data[offset:]
    journal.write_bytes(data)


def _assert_same_run(run: Path, reference: Path) -> None:
    """Weights, graphs and metrics equal the uninterrupted run's."""
    ours, theirs = (json.loads((p / "metrics.json").read_text()) for p in (run, reference))
    for key in ("tasks_committed", "accuracy", "decisions", "parameters", "metrics"):
        assert ours[key] == theirs[key], key
    for task in range(theirs["n_tasks"]):
        folder, expected = run / "tasks" / str(task), reference / "tasks" / str(task)
        assert (folder / "graph.json").read_bytes() == (expected / "graph.json").read_bytes(), task
        weights, expected_weights = (
            load_file(folder / "weights.safetensors"),
            load_file(expected / "weights.safetensors"),
        )
        assert weights.keys() == expected_weights.keys()
        assert all(torch.equal(weights[k], expected_weights[k]) for k in weights), task


def test_each_kind_of_damage_is_found_where_it_is_and_moved_aside(reference, tmp_path, caplog):
    run = Path(shutil.copytree(reference, tmp_path / "run"))
    journal = run / "study.journal"
    whole = journal.read_bytes()
    offset = whole.index(b"\n", len(whole) // 2) + 1  # the start of a record in the middle
    for kind, reason in enumerate(("not JSON", "unknown operation 99", "NUL bytes")):
        journal.write_bytes(whole)
        _damage(journal, offset, kind)
        damaged = journal.read_bytes()
        at = offset if kind != 1 else whole.index(b"\n", offset) + 1  # after the record it follows
        scan = scan_journal(journal)
        assert scan.trusted == at and reason in scan.reason, scan
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="growsearch"):
            aside = repair_journal(journal)
        # cut back to the last point between trials before the damage: every trial there finished
        assert scan.quiet <= at and journal.read_bytes() == whole[: scan.quiet]
        assert journal.read_bytes() + aside.read_bytes() == damaged
        running = [t for t in _trials(journal) if t.state == optuna.trial.TrialState.RUNNING]
        assert not running
        (message,) = [r.getMessage() for r in caplog.records]
        assert f"is damaged at byte {at}" in message and aside.name in message, message
        assert "trial(s) of task-1" in message, message  # what was lost, by study
        aside.unlink()


def _trials(journal: Path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return [t for s in storage.get_all_studies() for t in storage.get_all_trials(s._study_id)]


def test_a_record_naming_a_trial_never_created_is_damage(reference, tmp_path):
    journal = Path(shutil.copy(reference / "study.journal", tmp_path / "study.journal"))
    forged = {"op_code": 8, "worker_id": "w", "trial_id": 10_000, "user_attr": {"x": 1}}
    journal.write_bytes(journal.read_bytes() + json.dumps(forged).encode() + b"\n")
    scan = scan_journal(journal)
    assert "names trial 10000, which the journal never created" in scan.reason


def test_a_folder_that_cannot_be_repaired_reads_the_trusted_records(reference, tmp_path, caplog):
    run = Path(shutil.copytree(reference, tmp_path / "run"))
    journal = run / "study.journal"
    offset = journal.read_bytes().index(b"\n", journal.stat().st_size // 3) + 1
    _damage(journal, offset, 2)
    folder = RunFolder.open(run)
    with caplog.at_level(logging.WARNING, logger="growsearch"):
        backend = folder._journal_as_it_stands("the run folder is read-only")
    assert isinstance(backend, TrustedPrefix) and "not repaired (the run folder is read-only)" in caplog.text
    storage = optuna.storages.JournalStorage(backend)
    assert [s.study_name for s in optuna.get_all_study_summaries(storage)]  # what came before the damage
    assert journal.stat().st_size > offset  # nothing was written


def _offsets(journal: Path, count: int, seed: int) -> list[int]:
    size = journal.stat().st_size
    draw = random.Random(seed)
    return [draw.randrange(size // 20, size - size // 20) for _ in range(count)]


@pytest.mark.parametrize("which", ["finished", "killed"])
def test_a_journal_damaged_at_random_offsets_resumes_to_the_uninterrupted_run(
    which, reference, killed, tmp_path, one_thread, caplog
):
    source = reference if which == "finished" else killed
    for index, offset in enumerate(_offsets(source / "study.journal", 20, seed=len(which))):
        run = Path(shutil.copytree(source, tmp_path / f"{which}-{index}"))
        _damage(run / "study.journal", offset, index % 3)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="growsearch"):
            resume_run(run)
        said = [r.getMessage() for r in caplog.records if "study.journal" in r.getMessage()]
        assert len(said) == 1 and "moved the" in said[0], (offset, said)
        _assert_same_run(run, reference)
        shutil.rmtree(run)


@pytest.mark.parametrize("marks", [1, 2])  # after the pack's size alone; after the first trial's whole mark
def test_a_process_killed_between_a_packs_marks_resumes_to_the_uninterrupted_run(
    marks, reference, tmp_path, one_thread
):
    """A pack marks its trials one record at a time; killed between those records, the retries still train
    as that one pack, in the layout it would have had."""
    run = Path(shutil.copytree(reference, tmp_path / "run"))
    shutil.rmtree(run / "tasks" / "1")
    journal = run / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    task_1 = next(i for i, line in enumerate(lines) if b'"task-1"' in line)
    first_mark = next(i for i in range(task_1, len(lines)) if b'"pack_size"' in lines[i])
    assert b'"pack"' not in lines[first_mark]  # the size is a record of its own, before the marks
    journal.write_bytes(b"".join(lines[: first_mark + marks]))
    pack = [t for t in _trials(journal) if t.state == optuna.trial.TrialState.RUNNING]
    assert len(pack) > 1 and sum("pack" in t.user_attrs for t in pack) == marks - 1
    resume_run(run)
    _assert_same_run(run, reference)
