"""The method registry: `@register_method` on a `Method` subclass makes it available by name."""

from __future__ import annotations

import importlib

from growsearch.errors import UnknownNameError
from growsearch.methods.base import Method, TaskContext

METHODS: dict[str, type[Method]] = {}
_BUILTIN_MODULES = ("pnn", "packnet", "mntdp", "pathnet", "rcl", "cleas", "den", "learn_to_grow")


def register_method(cls: type[Method]) -> type[Method]:
    METHODS[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"growsearch.methods.{module}")


def get_method(name: str) -> type[Method]:
    _load_builtins()
    if name not in METHODS:
        raise UnknownNameError("method", name, list(METHODS))
    return METHODS[name]


def method_names() -> list[str]:
    _load_builtins()
    return sorted(METHODS)


__all__ = ["Method", "TaskContext", "get_method", "method_names", "register_method"]
