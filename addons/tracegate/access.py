"""What a request asks of a store, as policy and approval rules see it, whatever the store.

Each store kind parses requests into its own `Access` type (`stores/s3.py`, `stores/dynamodb.py`,
`stores/http.py`), and that type answers the questions only the store can: whether the access
lies inside a scope's resources, whether it lies inside an approval rule's wider prefixes, and
how many entries a listing asks for. Policy and approvals ask through this protocol and import
nothing from `stores/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tracegate.resources import Outside


class ScopeResources(Protocol):
    """The part of a scope that names resources (a `ScopeConfig` is one)."""

    @property
    def prefixes(self) -> list[str]: ...

    @property
    def tables(self) -> list[str]: ...


class Access(Protocol):
    """What a request asks for, canonicalised: the input to policy and to the audit row.

    `key` is one resource (an object key, a document id), `prefix` a listing's range; both
    are None where the store has no such notion (DynamoDB names tables instead)."""

    @property
    def operation(self) -> str: ...

    @property
    def key(self) -> str | None: ...

    @property
    def prefix(self) -> str | None: ...

    @property
    def resource(self) -> str: ...

    def outside(self, scope: ScopeResources) -> Outside | None:
        """None when the access lies inside the scope's resources; else what does not."""
        ...

    def within(self, prefixes: Sequence[str]) -> bool:
        """Whether the access lies inside these prefixes (an approval rule's wider ones)."""
        ...

    def listing_size(self, query: Sequence[tuple[str, str]]) -> int | None:
        """How many entries a listing asks for; None when the access is not such a listing."""
        ...
