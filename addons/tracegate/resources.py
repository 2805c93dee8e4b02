"""Resource names and prefixes: the scope arithmetic every prefix-addressed store shares.

An object key (S3) or a route's resource (an HTTP store) is one resource; a listing reads a
range named by its prefix. A scope allows resources under its prefixes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Outside:
    """What of an access lies outside a scope, and what the scope allows, in words."""

    what: str  # "key 'traces/b/1.json'", "tables t2, t3"
    allowed: str  # "allowed prefixes: traces/a/"
    plural: bool = False

    def refusal(self, role: str) -> str:
        verb = "are" if self.plural else "is"
        return f"{self.what} {verb} outside the scope of role {role!r} ({self.allowed})"


def key_in_scope(key: str, prefixes: Iterable[str]) -> bool:
    return any(key.startswith(p) for p in prefixes)


def prefix_overlaps(prefix: str, prefixes: Iterable[str]) -> bool:
    """A listing prefix is in scope when it is inside, or an ancestor of, an allowed prefix."""
    return any(prefix.startswith(p) or p.startswith(prefix) for p in prefixes)


def outside_prefixes(
    key: str | None, prefix: str | None, prefixes: Sequence[str]
) -> Outside | None:
    """A single resource must be under a prefix; a listing's range must overlap one (what
    it then lists is filtered entry by entry)."""
    if key is not None and not key_in_scope(key, prefixes):
        return Outside(f"key {key!r}", f"allowed prefixes: {', '.join(prefixes)}")
    if prefix is not None and not prefix_overlaps(prefix, prefixes):
        return Outside(f"prefix {prefix!r}", f"allowed prefixes: {', '.join(prefixes)}")
    return None


def within_prefixes(key: str | None, prefix: str | None, prefixes: Sequence[str]) -> bool:
    """Whether the resource, or the whole range, lies under one of `prefixes`."""
    target = key if key is not None else prefix
    return target is not None and key_in_scope(target, prefixes)
