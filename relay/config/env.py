"""`${NAME}` and `${NAME:-default}` in YAML string values, with the YAML path of every failure."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_BAD = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-.*?)?\})")


def path_str(path: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "(top level)"


def interpolate(
    tree: Any,
    env: Mapping[str, str] | None = None,
    unset: Callable[[str, str], str] | None = None,
) -> tuple[Any, list[tuple[str, str]], set[str]]:
    """Substitute environment variables throughout a parsed YAML tree.

    Returns the new tree, the errors as (path, message), and every value that came from the
    environment (the logger redacts those: secrets arrive that way). With `unset`, a variable
    that is not set is no error: `unset(path, name)` gives the text put in its place.
    """
    env = os.environ if env is None else env
    errors: list[tuple[str, str]] = []
    from_env: set[str] = set()

    def substitute(value: str, path: tuple[Any, ...]) -> str:
        if _BAD.search(value):
            errors.append(
                (path_str(path), "malformed ${...} reference (use ${NAME} or ${NAME:-default})")
            )
            return value

        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                from_env.add(env[name])
                return env[name]
            if default is not None:
                return default
            if unset is not None:
                return unset(path_str(path), name)
            errors.append((path_str(path), f"environment variable {name} is not set"))
            return ""

        return _VAR.sub(one, value)

    def walk(node: Any, path: tuple[Any, ...]) -> Any:
        if isinstance(node, str):
            return substitute(node, path) if "${" in node else node
        if isinstance(node, dict):
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, (*path, index)) for index, value in enumerate(node)]
        return node

    return walk(tree, ()), errors, from_env
