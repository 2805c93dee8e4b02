"""What policy decided for one request: the role and purpose it acts under, and their scope.

Plain data below policy, approvals, stores and the audit, which all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracegate.config import ScopeConfig


@dataclass(frozen=True)
class Grant:
    """What an allowed request may see: the scope of its role and purpose."""

    role: str
    purpose: str
    scope: ScopeConfig
    # Prefixes opened by an approval for a request beyond the scope's own.
    approved_prefixes: tuple[str, ...] = ()

    @property
    def prefixes(self) -> list[str]:
        return [*self.scope.prefixes, *self.approved_prefixes]

    def widened(self) -> Grant:
        return replace(self, approved_prefixes=tuple(self.scope.beyond_prefixes))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    grant: Grant
    # Outside the scope's prefixes but inside an approval rule's: allowed only once approved.
    beyond_scope: bool = False
