"""The journal storage's file, opened safely.

Optuna's journal is one JSON record per line, replayed in order; a record it cannot read stops every later
read. `scan_journal` finds the longest prefix of records that can be trusted: each whole (a newline at its
end), JSON, a known operation with the fields it needs, naming studies and trials that exist, and applied
by Optuna's own replay without an error. What follows is either a torn last record (a process killed
mid-append, a full disk) or damage in the middle (a garbage line, an unknown operation, a run of NUL bytes
from a crashed filesystem): nothing after the first untrusted record can be trusted either, since a lost
record shifts the ids every later one uses.

`repair_journal` (only while no other process can write the journal) moves the untrusted part aside to a
dated file, never deleting it, and says what was lost: a torn last record alone (the run goes on from its
last whole record, as after any kill), or, for damage, everything from the last point before it where no
trial was running (between trials: a cut through a trial, or through the records of a pack of trials,
would leave a state the run never had). Committed tasks live in tasks/, not in the journal, and the open
task's lost trials run again in their places with their seeds. Where the journal cannot be repaired
(a read-only folder, another writer), `TrustedPrefix` serves the trusted records to a read-only
`JournalStorage`. A lock file Optuna's journal left behind (a process killed while appending) is removed:
Optuna would wait out its 30-second grace period before every resume after a kill.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend
from optuna.storages.journal._storage import JournalOperation, JournalStorageReplayResult
from optuna.trial import TrialState

from growsearch.errors import CheckpointError

log = logging.getLogger("growsearch")
_OPS = {op.value: op for op in JournalOperation}
_STUDY_OPS = (JournalOperation.SET_STUDY_USER_ATTR, JournalOperation.SET_STUDY_SYSTEM_ATTR)
_STUDY_OPS += (JournalOperation.DELETE_STUDY, JournalOperation.CREATE_TRIAL)
_TRIAL_OPS = tuple(op for op in JournalOperation if op.name.startswith("SET_TRIAL"))
_FINISHED = {s.value for s in TrialState if s.is_finished()}


@dataclass(frozen=True)
class JournalScan:
    """What `scan_journal` found: `trusted` bytes (`logs`, parsed) from the start can be trusted; the rest,
    if any, is a torn last record (`torn`) or damage starting at byte `trusted` (`reason`). `quiet` bytes
    (`quiet_records` records) end at the last point before it where no trial was running: between
    trials."""

    size: int
    trusted: int
    logs: list[dict[str, Any]] = field(repr=False)
    reason: str | None = None
    torn: bool = False
    studies: list[str] = field(default_factory=list, repr=False)  # study names by id
    trial_studies: list[int] = field(default_factory=list, repr=False)  # study id by trial id
    quiet: int = 0
    quiet_records: int = 0
    quiet_counts: tuple[int, int] = (0, 0)  # studies and trials created by then

    @property
    def whole(self) -> bool:
        return self.trusted == self.size


def _problem(record: Any, replay: JournalStorageReplayResult, scan: _Tracker) -> str | None:
    """Why a parsed record cannot be trusted, or None."""
    if not isinstance(record, dict):
        return "not a journal record (a JSON object)"
    op = record.get("op_code")
    if not isinstance(op, int) or isinstance(op, bool) or op not in _OPS:
        return f"unknown operation {op!r}"
    if not isinstance(record.get("worker_id"), str):
        return "a record without its worker id"
    op = _OPS[op]
    if op == JournalOperation.DELETE_STUDY:  # it would also shift what later records mean
        return "delete_study: growsearch never deletes a study"
    if op in _STUDY_OPS:
        study = record.get("study_id")
        if not isinstance(study, int) or isinstance(study, bool) or not 0 <= study < len(scan.studies):
            return f"{op.name.lower()} names study {study!r}, which the journal never created"
    if op in _TRIAL_OPS:
        trial = record.get("trial_id")
        if not isinstance(trial, int) or isinstance(trial, bool) or not 0 <= trial < len(scan.trial_studies):
            return f"{op.name.lower()} names trial {trial!r}, which the journal never created"
    if op == JournalOperation.CREATE_STUDY and not isinstance(record.get("study_name"), str):
        return "create_study without a study name"
    try:
        replay.apply_logs([record])
    except Exception as error:  # noqa: BLE001 - whatever Optuna's replay cannot apply
        return f"Optuna cannot apply it ({type(error).__name__}: {error})"
    return None


@dataclass
class _Tracker:
    """Study names by id and each trial's study, as Optuna's replay assigns ids (in order of creation)."""

    studies: list[str] = field(default_factory=list)
    trial_studies: list[int] = field(default_factory=list)

    def follow(self, record: dict[str, Any]) -> None:
        op = record.get("op_code")
        if op == JournalOperation.CREATE_STUDY and record.get("study_name") not in self.studies:
            self.studies.append(record.get("study_name"))
        elif op == JournalOperation.CREATE_TRIAL:
            self.trial_studies.append(record.get("study_id"))


_SCANS: dict[Path, tuple[tuple[int, int, int], JournalScan]] = {}


def scan_journal(path: Path) -> JournalScan:
    """The journal at `path` read record by record, up to its first untrusted record (see the module)."""
    path = Path(path)
    stat = path.stat()
    signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
    cached = _SCANS.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    data = path.read_bytes()
    replay = JournalStorageReplayResult("growsearch-scan-")
    tracker = _Tracker()
    logs: list[dict[str, Any]] = []
    start, reason, torn = 0, None, False
    running: set[int] = set()
    quiet, quiet_records, quiet_counts = 0, 0, (0, 0)
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            torn = True  # the last record lacks its newline: cut off while it was appended
            break
        try:
            record = json.loads(data[start:end])
        except (ValueError, RecursionError) as error:
            line = data[start:end]
            reason = "NUL bytes" if b"\x00" in line else f"not JSON ({' '.join(str(error).split())[:60]})"
            break
        reason = _problem(record, replay, tracker)
        if reason is not None:
            break
        tracker.follow(record)
        logs.append(record)
        start = end + 1
        trial = _trial_of(record, tracker)
        if trial is not None:
            state = replay.get_trial(trial).state
            (running.add if state == TrialState.RUNNING else running.discard)(trial)
        if not running:
            quiet, quiet_counts = start, (len(tracker.studies), len(tracker.trial_studies))
            quiet_records = len(logs)
    if start == len(data):  # whole: nothing will be served from the scan, so nothing is kept
        logs, tracker = [], _Tracker()
    scan = JournalScan(
        len(data),
        start,
        logs,
        reason,
        torn,
        tracker.studies,
        tracker.trial_studies,
        quiet,
        quiet_records,
        quiet_counts,
    )
    _SCANS[path] = (signature, scan)
    return scan


def _trial_of(record: dict[str, Any], tracker: _Tracker) -> int | None:
    """The trial whose state a record may change (the one it creates, or the one it sets the state of)."""
    op = record.get("op_code")
    if op == JournalOperation.CREATE_TRIAL:
        return len(tracker.trial_studies) - 1
    if op == JournalOperation.SET_TRIAL_STATE_VALUES:
        return record["trial_id"]
    return None


def lost_records(scan: JournalScan, rest: bytes) -> str:
    """What the bytes cut off held, as far as their readable records tell: how many records, how many
    trial results, and of which studies."""
    records, results = 0, Counter()
    studies = list(scan.studies[: scan.quiet_counts[0]])
    trial_studies = list(scan.trial_studies[: scan.quiet_counts[1]])
    for line in rest.split(b"\n"):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(record, dict):
            continue
        records += 1
        op = record.get("op_code")
        if op == JournalOperation.CREATE_STUDY and isinstance(record.get("study_name"), str):
            studies.append(record["study_name"])
        elif op == JournalOperation.CREATE_TRIAL:
            trial_studies.append(record.get("study_id"))
            if record.get("state") in _FINISHED:
                results[_study_name(record.get("study_id"), studies)] += 1
        elif op == JournalOperation.SET_TRIAL_STATE_VALUES and record.get("state") in _FINISHED:
            trial = record.get("trial_id")
            study = (
                trial_studies[trial] if isinstance(trial, int) and 0 <= trial < len(trial_studies) else None
            )
            results[_study_name(study, studies)] += 1
    held = f"{records} readable record(s)"
    if results:
        held += ", among them the results of " + ", ".join(
            f"{n} trial(s) of {s}" for s, n in sorted(results.items())
        )
    return held


def _study_name(study: Any, studies: list[str]) -> str:
    if isinstance(study, int) and 0 <= study < len(studies):
        return str(studies[study])
    return "an unknown study"


def repair_journal(path: Path) -> Path | None:
    """Cut the journal at `path` to its trusted records, moving the rest aside (`<name>.torn-<time>` for a
    torn last record, `<name>.damaged-<time>` for damage in the middle) and saying what was lost; None if
    it was whole. Only while no other process can write the journal."""
    path = Path(path)
    if not path.is_file():
        return None
    scan = scan_journal(path)
    if scan.whole:
        return None
    data = path.read_bytes()
    # a torn last record: the journal goes on from its last whole record, as after any kill; damage: from
    # the last point before it between trials (a cut through a trial, or through the records of a pack
    # of trials, would leave a state the run never had at once: later records of theirs are gone)
    keep = scan.trusted if scan.reason is None else scan.quiet
    rest = data[keep:]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.{'damaged' if scan.reason else 'torn'}-{stamp}")
    aside.write_bytes(rest)
    with open(path, "r+b") as handle:
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    _SCANS.pop(path, None)
    if scan.reason is None:
        log.warning(
            "%s ended in a torn record (%d bytes, moved to %s); the run goes on from its last complete "
            "record",
            path,
            len(rest),
            aside.name,
        )
    else:
        log.warning(
            "%s is damaged at byte %d (record %d: %s); kept its first %d records (up to the last point "
            "between trials before the damage) and moved the %d bytes after them (%s) to %s; committed "
            "tasks keep their checkpoints in tasks/, and the open task's lost trials run again with their "
            "seeds",
            path,
            scan.trusted,
            len(scan.logs) + 1,
            scan.reason,
            scan.quiet_records,
            len(rest),
            lost_records(scan, rest),
            aside.name,
        )
    return aside


class TrustedPrefix(BaseJournalBackend):
    """A read-only journal backend holding a journal's trusted records (where it cannot be repaired)."""

    def __init__(self, path: Path, logs: list[dict[str, Any]]):
        self.path, self.logs = Path(path), logs

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        yield from self.logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise CheckpointError(
            f"{self.path} is read here as it stands (damaged, not repaired): nothing is written"
        )


def remove_stale_lock(path: Path) -> bool:
    """Remove the journal's `.lock` file; only call it while no other process can write the journal (the
    run folder's lock held, or free). True if there was one."""
    lock = Path(str(path) + ".lock")
    if not lock.exists() and not lock.is_symlink():
        return False
    lock.unlink(missing_ok=True)
    log.info("%s: removed a journal lock left by a process that was stopped while writing", lock)
    return True
