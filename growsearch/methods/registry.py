"""The method registry: every concrete `Method` subclass defined in a module of this package is a built-in
method, found by name; nothing lists them by hand. A method defined elsewhere (your own package or a
notebook) is added with `register_method`.

`catalog.json` beside this module is derived from the classes (`python -m growsearch.methods` rewrites
it, and a test fails while it is stale): it lets `growsearch list methods` answer without
importing torch, and `get_method` import only the module it needs. It is a cache, never the truth: a
module it does not know sends every lookup back to importing the package's modules. It also names the
module of each node kind a method defines beside itself, so loading a graph that holds one imports it.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from growsearch.errors import UnknownNameError
from growsearch.graph.kind_finders import add_kind_finder

if TYPE_CHECKING:
    from growsearch.methods.base import Method

CATALOG = Path(__file__).with_name("catalog.json")
_NOT_METHODS = {"base", "registry", "algorithms", "toolkit"}
METHODS: dict[str, type[Method]] = {}  # found or registered so far


@dataclass(frozen=True)
class MethodInfo:
    """What `growsearch list methods` shows of a method, and the module that defines it."""

    name: str
    paper: str
    scenarios: tuple[str, ...]
    module: str
    backbones: tuple[str, ...] = ()


def register_method(cls: type[Method]) -> type[Method]:
    """Make `cls` available by its `name` (usable as a class decorator)."""
    METHODS[cls.name] = cls
    return cls


def _info(cls: type[Method]) -> MethodInfo:
    return MethodInfo(cls.name, cls.paper, tuple(cls.scenarios), cls.__module__, tuple(cls.backbones))


def _modules() -> list[str]:
    """The package's method modules, by dotted name."""
    names = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])]
    return sorted(f"{__package__}.{n}" for n in names if n not in _NOT_METHODS and not n.startswith("_"))


def _methods_in(module_name: str) -> list[type[Method]]:
    from growsearch.methods.base import Method

    module = importlib.import_module(module_name)
    return [
        cls
        for cls in vars(module).values()
        if inspect.isclass(cls)
        and cls.__module__ == module.__name__
        and issubclass(cls, Method)
        and "name" in vars(cls)
        and not inspect.isabstract(cls)
    ]


def _load_all() -> None:
    for module in _modules():
        for cls in _methods_in(module):
            METHODS.setdefault(cls.name, cls)


def _catalog() -> dict[str, MethodInfo] | None:
    """The catalog, or None when it is missing, unreadable or does not cover exactly today's modules."""
    try:
        entries = json.loads(CATALOG.read_text())["methods"]
        infos = {
            e["name"]: MethodInfo(
                e["name"], e["paper"], tuple(e["scenarios"]), e["module"], tuple(e.get("backbones", ()))
            )
            for e in entries
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return infos if sorted({i.module for i in infos.values()}) == _modules() else None


def _catalog_kinds() -> dict[str, str]:
    """Node kind -> the module that defines it, for the kinds methods define beside themselves."""
    try:
        kinds = json.loads(CATALOG.read_text())["node_kinds"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return kinds if isinstance(kinds, dict) else {}


def _find_kind(kind: str) -> None:
    """A node kind a method defines (a graph being loaded names it): import the module that registers it,
    from the catalog, else every method module."""
    from growsearch.graph.specs import NODE_KINDS

    module = _catalog_kinds().get(kind)
    if isinstance(module, str) and module.startswith(f"{__package__}."):
        importlib.import_module(module)
    if kind not in NODE_KINDS:
        _load_all()


add_kind_finder(_find_kind)


def method_infos() -> list[MethodInfo]:
    """Every method: the built-in ones (from the catalog when it is fresh) and the registered ones."""
    infos = _catalog()
    if infos is None:
        _load_all()
        infos = {}
    infos = {**infos, **{name: _info(cls) for name, cls in METHODS.items()}}
    return [infos[name] for name in sorted(infos)]


def method_names() -> list[str]:
    return [info.name for info in method_infos()]


def get_method(name: str) -> type[Method]:
    if name not in METHODS:
        known = _catalog() or {}
        if name in known:
            for cls in _methods_in(known[name].module):
                METHODS.setdefault(cls.name, cls)
        if name not in METHODS:
            _load_all()
    if name not in METHODS:
        raise UnknownNameError("method", name, list(METHODS))
    return METHODS[name]


def write_catalog() -> Path:
    """Rewrite catalog.json from the package's method classes."""
    from growsearch.graph.specs import NODE_KINDS

    _load_all()
    builtin = [_info(cls) for cls in METHODS.values() if cls.__module__.startswith(f"{__package__}.")]
    entries = [asdict(info) for info in sorted(builtin, key=lambda i: i.name)]
    kinds = {k: c.__module__ for k, c in sorted(NODE_KINDS.items()) if c.__module__.startswith(__package__)}
    CATALOG.write_text(json.dumps({"methods": entries, "node_kinds": kinds}, indent=2) + "\n")
    return CATALOG
