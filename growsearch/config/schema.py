"""Build frozen dataclasses from YAML mappings, refusing unknown keys and wrong types.

The one place configuration is checked: the search space's sections, a method's `options:`, the
`backend:` section all go through `from_mapping`.

Every error names the file, the dotted field and the expected value, e.g.
`search_spaces/pnn.yaml: training.lr: expected a number > 0, got 'fast'`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, TypeVar

from growsearch.errors import ConfigError

T = TypeVar("T")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
INT64 = 2**63 - 1  # no integer of the configuration may exceed what a tensor size or a C long holds


def shown(value: Any) -> str:
    """`value` as an error message shows it: cut short when long (a 5,000-digit integer included)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"{'-' if value < 0 else ''}an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an integer past Python's 4,300 digits inside, or a cycle
        return "a value too long to show"
    return text if len(text) <= 80 else text[:77] + "..."


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
                if _number_of_kind(value, option):
                    raise  # the right type, a wrong value (not finite): that is the message
                continue
        raise ConfigError(f"{where}: expected {_describe(kind)}, got {shown(value)}")
    if origin is typing.Literal:
        if _hashable(value) and value in typing.get_args(kind):
            return value
        raise ConfigError(f"{where}: expected {_describe(kind)}, got {shown(value)}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected {_describe(kind)}, got {shown(value)}")
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
            return value  # its range: the dataclass's own validate, then `_check_int64`
    elif kind is float:
        number = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value) if abs(value) <= 1e308 else math.inf
        elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            number = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; it is a number
        elif isinstance(value, str) and value.strip().lower().lstrip("+-.") in ("inf", "infinity", "nan"):
            number = math.inf  # what --lr inf types
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{where}: expected a finite number, got {shown(value)}")
            return number
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is Any:
        return value
    raise ConfigError(f"{where}: expected {_describe(kind)}, got {shown(value)}")


def _number_of_kind(value: Any, kind: Any) -> bool:
    return kind is float and isinstance(value, int | float) and not isinstance(value, bool)


def _check_int64(instance: Any, where: str) -> None:
    """No integer field beyond 64 bits (a tensor size, a seed, a C long), whatever the dataclass checks."""
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for item in values:
            if isinstance(item, int) and not isinstance(item, bool) and abs(item) > INT64:
                raise ConfigError(
                    f"{where}.{f.name}: expected an integer of at most 2**63 - 1, got {shown(item)}"
                )


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def check_keys(data: dict, where: str) -> None:
    """Field names are strings (a YAML key such as 1 or true is not a name)."""
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {shown(key)} is not a field name; expected a string")


def from_mapping(cls: type[T], data: Any, where: str) -> T:
    """An instance of dataclass `cls` from a YAML mapping; `where` is 'FILE: section' for errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of fields, got {shown(data)}")
    check_keys(data, where)
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
    _check_int64(instance, where)
    return instance


def require_at_most(value: int, bound: int, where: str, why: str) -> None:
    """Refuse an integer above a sane `bound`, saying why there is one."""
    require(value <= bound, where, f"expected at most {bound:,} ({why}), got {shown(value)}")


def require_size(
    value: int | None, where: str, at_least: int = 1, at_most: int = 1_000_000, null_allowed: bool = False
) -> None:
    """Refuse a size option outside [at_least, at_most] (by default a layer's largest size), so a typo
    is refused before the run folder exists rather than when a tensor is made."""
    if value is None and null_allowed:
        return
    expected = f"an integer from {at_least} to {at_most:,}"
    require(
        value is not None and at_least <= value <= at_most,
        where,
        f"expected {'null or ' if null_allowed else ''}{expected}, got {shown(value)}",
    )


def require(condition: bool, where: str, message: str) -> None:
    """Raise a ConfigError at `where` unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{where}: {message}")
