"""A restricted unpickler for CIFAR's python batches: numpy arrays and plain containers, nothing else.

pickle.load can run any callable a file names; this reader resolves only an allow-list of globals and
refuses every other one with a DataError naming the file, before anything is called.
"""

from __future__ import annotations

import builtins
import codecs
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from growsearch.errors import DataError

_BUILTINS = ("list", "dict", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float", "bool")


@lru_cache(maxsize=1)
def _allowed() -> dict[tuple[str, str], Any]:
    core = getattr(np, "_core", None) or np.core
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):  # both spellings occur in files written by numpy 1 / 2
        allowed[(f"{package}.multiarray", "_reconstruct")] = core.multiarray._reconstruct
        allowed[(f"{package}.numeric", "_frombuffer")] = core.numeric._frombuffer
    allowed[("_codecs", "encode")] = codecs.encode
    for name in _BUILTINS:
        allowed[("builtins", name)] = allowed[("__builtin__", name)] = getattr(builtins, name)
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class resolves only numpy-array and builtin-container globals."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed()[(module, name)]
        except KeyError:
            raise DataError(
                f"{str(self._path)!r}: refusing to unpickle the global {module}.{name}; a data batch may "
                "only hold numpy arrays, lists and dicts (the file is corrupt or not a dataset file)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{str(self._path)!r}: refusing a pickle persistent id; not a dataset file")


def safe_load(path: Path) -> Any:
    """Unpickle `path` with RestrictedUnpickler; DataError for disallowed globals or unreadable files."""
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as exc:  # fmt: skip
        raise DataError(f"cannot read {str(path)!r} as a python-pickle data batch: {exc}") from exc
