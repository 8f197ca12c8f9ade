"""The method registry: every concrete `Method` subclass defined in a module of this package is a built-in
method, found by name on first use; nothing else lists them. A method defined elsewhere (your own package or
a notebook) is added with `register_method`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from growsearch.errors import UnknownNameError
from growsearch.methods.base import Method

METHODS: dict[str, type[Method]] = {}
_NOT_METHODS = {"base", "registry", "algorithms"}
_loaded = False


def register_method(cls: type[Method]) -> type[Method]:
    """Make `cls` available by its `name` (usable as a class decorator)."""
    METHODS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name in _NOT_METHODS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        for cls in vars(module).values():
            defined_here = inspect.isclass(cls) and cls.__module__ == module.__name__
            if (
                defined_here
                and issubclass(cls, Method)
                and "name" in vars(cls)
                and not inspect.isabstract(cls)
            ):
                METHODS.setdefault(cls.name, cls)
    _loaded = True


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        _load_builtins()
    if name not in METHODS:
        raise UnknownNameError("method", name, list(METHODS))
    return METHODS[name]


def method_names() -> list[str]:
    _load_builtins()
    return sorted(METHODS)
