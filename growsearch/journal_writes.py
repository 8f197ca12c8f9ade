"""A trial's journal records written in one append, where nothing reads them in between.

Optuna's journal appends each record on its own: a lock file made and removed, a write and an fsync, for
every attribute a trial is given. `together()` holds the records a block of writes makes (a trial's
report attributes, a pack's attributes, a trial's params) and appends them at its end, in one go, in
order; a journal backend wrapped in `HeldWrites` honours it (others write at once). Optuna reads what it
has written back from the file, so a block must not read what it wrote until it ends: the attributes it
writes are only read once the trial is told, and a trial's params are read from the trial's own cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from optuna.storages.journal import BaseJournalBackend

_HELD: ContextVar[dict[int, tuple[BaseJournalBackend, list[dict[str, Any]]]] | None] = ContextVar(
    "growsearch_held_journal_writes", default=None
)


@contextmanager
def together() -> Iterator[None]:
    """Hold the records written in this block (this thread) and append them, per journal, at its end:
    also when the block raises, so nothing written is lost. Nested blocks join the outer one."""
    if _HELD.get() is not None:
        yield
        return
    token = _HELD.set({})
    try:
        yield
    finally:
        held = _HELD.get() or {}
        _HELD.reset(token)
        for backend, logs in held.values():
            backend.append_logs(logs)


class HeldWrites(BaseJournalBackend):
    """A journal backend whose appends inside `together()` wait for the block's end."""

    def __init__(self, backend: BaseJournalBackend):
        self.backend = backend

    def read_logs(self, log_number_from: int) -> Any:
        return self.backend.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        held = _HELD.get()
        if held is None:
            self.backend.append_logs(logs)
        else:
            held.setdefault(id(self), (self.backend, []))[1].extend(logs)
