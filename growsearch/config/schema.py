"""Build frozen dataclasses from YAML mappings, refusing unknown keys and wrong types.

The one place configuration is checked: the search space's sections, a method's `options:`, the
`backend:` section all go through `from_mapping`.

Every error names the file, the dotted field and the expected value, e.g.
`search_spaces/pnn.yaml: training.lr: expected a number > 0, got 'fast'`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, TypeVar

from growsearch.errors import ConfigError

T = TypeVar("T")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _describe(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(kind))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(kind))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(kind)[0])}"
    if kind is type(None):
        return "null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))


def _convert(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _convert(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected {_describe(kind)}, got {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(kind):
            return value
        raise ConfigError(f"{where}: expected {_describe(kind)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected {_describe(kind)}, got {value!r}")
        item = typing.get_args(kind)[0]
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if kind is type(None):
        if value is None:
            return None
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; it is a number
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is Any:
        return value
    raise ConfigError(f"{where}: expected {_describe(kind)}, got {value!r}")


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """An instance of dataclass `cls` from a YAML mapping; `where` is 'FILE: section' for errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field {unknown[0]!r}; expected some of: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, value in data.items():
        values[name] = _convert(value, hints[name], f"{where}.{name}")
    try:
        instance = cls(**values)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from error
    check = getattr(instance, "validate", None)
    if check is not None:
        check(where)
    return instance


def require(condition: bool, where: str, message: str) -> None:
    """Raise a ConfigError at `where` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{where}: {message}")
