"""The identity a request acts as, after its token has been verified."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Principal:
    subject: str
    issuer: str
    provider: str
    groups: tuple[str, ...] = ()
    claims: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    expires_at: float | None = None

    def claim_values(self, claim: str) -> tuple[str, ...]:
        """A claim as a tuple of strings, whether the token holds a string or a list."""
        value = self.claims.get(claim)
        if value is None:
            return ()
        if isinstance(value, list | tuple):
            return tuple(str(v) for v in value)
        return (str(value),)
