"""The journal storage's file, opened safely: a torn last record (a process killed mid-append, a full
disk) is moved aside to a dated file, never deleted, and the journal goes on from its last complete
record. Appending after a partial line would make every later read fail. A lock file Optuna's journal
left behind (a process killed while appending) is removed: Optuna would wait out its 30-second grace
period before every resume after a kill."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("growsearch")
TAIL_BYTES = 1 << 20


def _complete_prefix(data: bytes) -> int:
    """Bytes of `data` that form complete journal records (lines of JSON, each ending in a newline)."""
    end = len(data)
    while end:
        start = data.rfind(b"\n", 0, end - 1) + 1  # the last line, newline included
        line = data[start:end]
        if line.endswith(b"\n"):
            try:
                json.loads(line)
                return end
            except ValueError:
                pass
        end = start
    return 0


def repair_torn_tail(path: Path) -> Path | None:
    """Cut a torn last record off the journal at `path` into `<name>.torn-<time>`; None if it was whole."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, "rb") as handle:  # the common case: a whole last record, read from the tail alone
        handle.seek(max(0, path.stat().st_size - TAIL_BYTES))
        tail = handle.read()
    if tail.endswith(b"\n") and _complete_prefix(tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 :]):
        return None
    data = path.read_bytes()
    keep = _complete_prefix(data)
    if keep == len(data):
        return None
    aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
    aside.write_bytes(data[keep:])
    with open(path, "r+b") as handle:
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    log.warning(
        "%s ended in a torn record (%d bytes, moved to %s); the run goes on from its last complete record",
        path,
        len(data) - keep,
        aside.name,
    )
    return aside


def remove_stale_lock(path: Path) -> bool:
    """Remove the journal's `.lock` file; only call it while no other process can write the journal (the
    run folder's lock held, or free). True if there was one."""
    lock = Path(str(path) + ".lock")
    if not lock.exists() and not lock.is_symlink():
        return False
    lock.unlink(missing_ok=True)
    log.info("%s: removed a journal lock left by a process that was stopped while writing", lock)
    return True
