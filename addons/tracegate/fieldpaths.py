"""A scope's field allow-list as attribute paths, and whether a request may name a field.

A request that filters, selects or sorts on a field the role may not read learns what that
field holds from which items come back (an oracle). Store adapters ask here, whatever syntax
their store uses to name fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

Path = tuple[str, ...]
_SIMPLE = re.compile(r"\$(?:\.[A-Za-z_][\w-]*)+")


def allowed_paths(scope: Any) -> list[Path] | None:
    """`$.user.id` -> ("user", "id"); None: every field is readable (`allow: all`); an empty
    list: a path that is not plain attribute names, so no field may be named."""
    allow = scope.fields.allow
    if allow == "all":
        return None
    paths: list[Path] = []
    for path in allow:
        if not _SIMPLE.fullmatch(path):
            return []
        paths.append(tuple(path[2:].split(".")))
    partition = getattr(scope, "partition", None)
    if partition is not None:  # pinned to the caller's own partition anyway
        paths.append(tuple(partition.attribute.split(".")))
    return paths


def hidden(paths: Iterable[Path], scope: Any) -> Path | None:
    """The first of `paths` the scope may not read, or None."""
    allowed = allowed_paths(scope)
    if allowed is None:
        return None
    for path in paths:
        if not any(path[: len(a)] == a for a in allowed):
            return path
    return None


def mango_fields(selector: Any, prefix: Path = ()) -> Iterator[Path]:
    """Field paths a CouchDB Mango selector names (combinators and operators looked through)."""
    if isinstance(selector, list):
        for item in selector:
            yield from mango_fields(item, prefix)
        return
    if not isinstance(selector, dict):
        return
    for key, value in selector.items():
        if key in ("$and", "$or", "$nor", "$not", "$elemMatch", "$allMatch"):
            yield from mango_fields(value, prefix)
        elif key.startswith("$"):
            continue  # an operator on the current field: its operand is a value
        else:
            path = (*prefix, *key.split("."))
            yield path
            yield from mango_fields(value, path)


def sort_fields(sort: Any) -> Iterator[Path]:
    """Field paths of a Mango `sort`: names, or {name: direction} objects."""
    for item in sort if isinstance(sort, list) else [sort]:
        names = [item] if isinstance(item, str) else list(item) if isinstance(item, dict) else []
        for name in names:
            yield tuple(str(name).split("."))
