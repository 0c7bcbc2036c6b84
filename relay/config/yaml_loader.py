"""YAML for the config: safe, duplicate keys an error, and the line of every key and item.

`yaml.safe_load` lets the last of two equal keys silently win (a second `sinks:` drops the
first's sinks); here that is an error naming both lines. The returned `lines` map a YAML path
(as relay.config.env.path_str writes it: `sinks.shop.events[1]`) to its 1-based line, so a
validation error can say where to look.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from relay.config.env import path_str


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping holds the same key twice."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, MappingNode):
            self.flatten_mapping(node)
            seen: dict[Any, Node] = {}
            for key_node, _value in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    break
                if first is not None:
                    raise DuplicateKeyError(
                        "while reading a mapping",
                        node.start_mark,
                        f"duplicate key {key!r} (first on line {first.start_mark.line + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


def load_yaml(text: str) -> tuple[Any, dict[str, int]]:
    """The parsed document and the line of each path in it; yaml.YAMLError when invalid
    (DuplicateKeyError for a repeated key, with `problem_mark` on the second one)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    lines: dict[str, int] = {}
    if node is not None:
        _marks(node, (), lines)
    return data, lines


def _marks(node: Node, path: tuple[Any, ...], lines: dict[str, int]) -> None:
    lines.setdefault(path_str(path), node.start_mark.line + 1)
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            key = getattr(key_node, "value", None)
            if isinstance(key, str):
                lines[path_str((*path, key))] = key_node.start_mark.line + 1
                _marks(value_node, (*path, key), lines)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _marks(item, (*path, index), lines)


def line_of(lines: dict[str, int], where: str) -> int | None:
    """The line of `where`, else of its nearest parent that has one (a missing key: its map)."""
    while where:
        if where in lines:
            return lines[where]
        cut = max(where.rfind("."), where.rfind("["))
        if cut <= 0:
            break
        where = where[:cut]
    return None
