"""One writer per run folder: an advisory lock (`flock`) on `.lock`, held for the life of the process that
runs or resumes the run, released by the kernel however the process ends (kill -9 included). The file
names the holder (pid and host), so a second writer is told who has it."""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from growsearch.errors import RunFolderError

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self.handle = None

    def acquire(self) -> RunLock:
        handle = open(self.path, "a+")  # noqa: SIM115 - held until release or the process ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderError(
                f"{self.path.parent} is in use by {holder}: one `growsearch run` or `resume` writes a run "
                "folder at a time; wait for it to end or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
