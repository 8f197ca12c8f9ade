"""Files written whole or not at all: write to a temporary file beside the target, then rename. The file
gets the permissions the process's umask gives a new file (a temporary file is created owner-only)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from growsearch.errors import CheckpointError, WriteError

_UMASK_LOCK = threading.Lock()


def _file_mode() -> int:
    """The mode `open()` would give a new file under the current umask."""
    with _UMASK_LOCK:  # reading the umask means setting it: keep other threads out meanwhile
        mask = os.umask(0o077)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    path = Path(path)
    try:
        return _write(path, data)
    except OSError as error:
        reason = error.strerror or str(error)
        raise WriteError(f"cannot write {path}: {reason}; files already written are intact") from None


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, _file_mode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a run folder holds")


def read_json(path: Path, constants: bool = False) -> Any:
    """A JSON file of a run folder: a CheckpointError naming it when it cannot be read, is not UTF-8, is not
    JSON, holds NaN or Infinity (never written: every file is written with allow_nan=False; `constants`
    reads them, for a caller that names the field holding one), or is nested past Python's recursion
    limit."""
    path = Path(path)
    try:
        return json.loads(
            path.read_text(encoding="utf-8"), parse_constant=None if constants else _no_constant
        )
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not text (not UTF-8): the file is torn or was edited") from None
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deep to be growsearch's: the file was edited") from None
    except ValueError as error:
        reason = " ".join(str(error).split())[:120]
        raise CheckpointError(
            f"{path} is not valid JSON ({reason}): the file is torn or was edited"
        ) from None
