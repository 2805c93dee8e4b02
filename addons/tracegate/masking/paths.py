"""JSONPath expressions compiled for masking: concrete key/index paths of every match.

Most rules are plain paths (`$.user.email`, `$.messages[*].content`) or the OTLP attribute idiom
(`$..attributes[?key == 'user.email'].value.stringValue`); those are walked directly, several
times faster than jsonpath-ng. Anything else (slices, quoted names, other filters) goes through
jsonpath-ng's extended parser. Both give the same matches (tests compare them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Protocol

from jsonpath_ng import DatumInContext
from jsonpath_ng.ext import parse

Path = tuple[str | int, ...]
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_STEP = re.compile(
    rf"\.\.(?P<desc>{_NAME})|\.(?P<name>{_NAME})|\[(?P<index>\d+)\]|(?P<wild>\[\*\]|\.\*)"
    rf"|\[\?\(?(?:@\.)?(?P<field>{_NAME})\s*==\s*'(?P<literal>[^'\\]*)'\)?\]"
)
_WILDCARD = object()


class _Descendant:
    def __init__(self, name: str) -> None:
        self.name = name


class _Filter:
    def __init__(self, field: str, literal: str) -> None:
        self.field, self.literal = field, literal


class CompiledPath(Protocol):
    def paths(self, document: Any) -> Iterator[Path]: ...


class SimplePath:
    """`$` then steps: `.name`, `[n]`, `[*]`, `.*`, `..name`, `[?field == 'literal']`."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps

    def paths(self, document: Any) -> Iterator[Path]:
        yield from self._walk(document, 0, ())

    def _walk(self, node: Any, depth: int, path: Path) -> Iterator[Path]:
        if depth == len(self.steps):
            yield path
            return
        step = self.steps[depth]
        if isinstance(step, _Descendant):
            yield from self._descend(node, step.name, depth, path)
        elif isinstance(step, _Filter):
            if isinstance(node, list):
                for index, item in enumerate(node):
                    if isinstance(item, dict) and item.get(step.field) == step.literal:
                        yield from self._walk(item, depth + 1, (*path, index))
        elif step is _WILDCARD:
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

    def _descend(self, node: Any, name: str, depth: int, path: Path) -> Iterator[Path]:
        """`..name`: every value under key `name` at any depth, in document (pre-)order."""
        if isinstance(node, dict):
            if name in node:
                yield from self._walk(node[name], depth + 1, (*path, name))
            for key, value in node.items():
                if isinstance(value, dict | list):
                    yield from self._descend(value, name, depth, (*path, key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, dict | list):
                    yield from self._descend(item, name, depth, (*path, index))


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
    steps: list[Any] = []
    position = 1
    if not text.startswith("$"):
        return JsonPathExpression(text)
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            return JsonPathExpression(text)
        if match["desc"]:
            steps.append(_Descendant(match["desc"]))
        elif match["name"]:
            steps.append(match["name"])
        elif match["index"]:
            steps.append(int(match["index"]))
        elif match["wild"]:
            steps.append(_WILDCARD)
        else:
            steps.append(_Filter(match["field"], match["literal"]))
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
