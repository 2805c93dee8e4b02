"""JSONPath expressions compiled for masking: concrete key/index paths of every match.

Most rules are plain paths (`$.user.email`, `$.messages[*].content`); those are walked directly,
which is several times faster than jsonpath-ng. Anything else (filters, `..`, slices, quoted
names) goes through jsonpath-ng's extended parser. Both give the same matches.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Protocol

from jsonpath_ng import DatumInContext
from jsonpath_ng.ext import parse

Path = tuple[str | int, ...]
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[\*\]|\.\*")
_WILDCARD = object()


class CompiledPath(Protocol):
    def paths(self, document: Any) -> Iterator[Path]: ...


class SimplePath:
    """`$` followed by `.name`, `[n]`, `[*]` or `.*` steps."""

    def __init__(self, steps: list[str | int | object]) -> None:
        self.steps = steps

    def paths(self, document: Any) -> Iterator[Path]:
        yield from self._walk(document, 0, ())

    def _walk(self, node: Any, depth: int, path: Path) -> Iterator[Path]:
        if depth == len(self.steps):
            yield path
            return
        step = self.steps[depth]
        if step is _WILDCARD:
            if isinstance(node, list):
                for index, item in enumerate(node):
                    yield from self._walk(item, depth + 1, (*path, index))
            elif isinstance(node, dict):
                for key, value in node.items():
                    yield from self._walk(value, depth + 1, (*path, key))
        elif isinstance(step, int):
            if isinstance(node, list) and step < len(node):
                yield from self._walk(node[step], depth + 1, (*path, step))
        elif isinstance(node, dict) and step in node:
            yield from self._walk(node[step], depth + 1, (*path, step))


class JsonPathExpression:
    """Any other expression, through jsonpath-ng."""

    def __init__(self, text: str) -> None:
        self._expr = parse(text)

    def paths(self, document: Any) -> Iterator[Path]:
        for match in self._expr.find(document):
            path = _path_of(match)
            if path is not None:
                yield path


def compile_path(text: str) -> CompiledPath:
    steps: list[str | int | object] = []
    position = 1
    if not text.startswith("$"):
        return JsonPathExpression(text)
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            return JsonPathExpression(text)
        name, index = match.group(1), match.group(2)
        steps.append(name if name is not None else int(index) if index is not None else _WILDCARD)
        position = match.end()
    return SimplePath(steps)


def _path_of(match: DatumInContext) -> Path | None:
    """The concrete key/index path of a match, or None when it cannot be expressed as one."""
    parts: list[str | int] = []
    node: DatumInContext | None = match
    while node is not None:
        segment = node.path
        kind = type(segment).__name__
        if kind == "Fields" and len(segment.fields) == 1:
            parts.append(segment.fields[0])
        elif kind == "Index" and len(segment.indices) == 1:
            parts.append(segment.indices[0])
        elif kind not in ("Root", "This"):
            return None
        node = node.context
    return tuple(reversed(parts))
