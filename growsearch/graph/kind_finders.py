"""Where node kinds not registered yet are looked for (torch-free, so the method registry can offer itself).

A graph naming a kind that no imported module has registered (`graph.specs.node_kind`) asks each finder;
the method registry is one: it imports the method module that defines the kind beside itself.
"""

from __future__ import annotations

from collections.abc import Callable

KIND_FINDERS: list[Callable[[str], None]] = []


def add_kind_finder(finder: Callable[[str], None]) -> None:
    """`finder(kind)` registers node kind `kind` where it knows where it is defined (by importing its
    module)."""
    if finder not in KIND_FINDERS:
        KIND_FINDERS.append(finder)
