"""YAML read strictly: what `yaml.safe_load` accepts silently or fails on with a traceback is refused with
one line naming the file, the line and what was expected.

Refused: a key given twice in one mapping (safe_load keeps the last), a key that is not a string (a
search space's fields are names; mixed key types cannot even be sorted), nesting deeper than
`MAX_DEPTH` levels (safe_load recurses once per level), an alias that contains itself, and a document
that aliases expand to more than `MAX_NODES` values (a few lines can stand for billions). Tags are
refused as safe_load refuses them; integers too long to convert are refused by their line.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from growsearch.errors import ConfigError

MAX_DEPTH = 64  # a search space is a few levels deep; a run's config.yaml, five
MAX_NODES = 100_000  # values once aliases are expanded
_MERGE = "tag:yaml.org,2002:merge"


class _Refused(yaml.YAMLError):
    """A document this reader refuses, with the line it is on."""

    def __init__(self, message: str, node: Node | None = None):
        line = f"line {node.start_mark.line + 1}: " if node is not None else ""
        super().__init__(line + message)


class _StrictLoader(yaml.SafeLoader):
    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()
                line = event.start_mark.line + 1
                raise _Refused(
                    f"line {line}: nested more than {MAX_DEPTH} levels deep; expected a few levels"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                if not isinstance(key_node, ScalarNode):
                    raise _Refused("a key is a list or a mapping; expected a name", key_node)
                key = self.construct_object(key_node)
                if not isinstance(key, str):
                    raise _Refused(
                        f"key {key_node.value!r} is read as {type(key).__name__}; expected a name (a string: "
                        f"quote it, '{key_node.value}')",
                        key_node,
                    )
                if key in seen:
                    first = seen[key].start_mark.line + 1
                    raise _Refused(
                        f"key {key!r} is given twice (first on line {first}); expected it once", key_node
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError:  # longer than Python converts (4,300 digits)
            raise _Refused(f"the integer {node.value[:20]}... is too long; expected a number", node) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _check_expanded(root: Node) -> None:
    """Refuse a node graph whose aliases make it cyclic, deeper than MAX_DEPTH or larger than MAX_NODES
    once expanded (depth and size are computed once per node: no walk of the expansion itself)."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if depth[key] > MAX_DEPTH:
                raise _Refused(f"aliases nest it more than {MAX_DEPTH} levels deep; expected a few", node)
            if size[key] > MAX_NODES:
                raise _Refused(f"aliases expand it to more than {MAX_NODES:,} values; expected fewer", node)
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Refused("an alias refers to a value that contains it (a cycle)", node)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in size)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def read_yaml(text: str, where: str) -> Any:
    """The document in `text`, read strictly; a refusal is a ConfigError `WHERE: ...`."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node)
        return loader.construct_document(node)
    except _Refused as error:
        raise ConfigError(f"{where}: {error}") from None
    except ConstructorError as error:
        raise ConfigError(f"{where}: not valid YAML: {_one_line(error)}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML: {_one_line(error)}") from None
    except RecursionError:  # a very long document of short nested lines: the scanner's own limit
        raise ConfigError(f"{where}: nested too deep to read; expected a few levels") from None
    finally:
        loader.dispose()


def _one_line(error: yaml.YAMLError) -> str:
    return " ".join(str(error).split())
