"""Why a request was refused, in a form every layer can raise and every store can render."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Denial(Exception):
    """A refusal: the HTTP status, a stable machine code, and a reason a person can act on."""

    status: int
    code: str
    reason: str
    # A short, fixed category for metrics (e.g. "expired"); never free text.
    category: str = ""
    # Extra fields for the JSON error (e.g. the id of a pending approval); no secrets.
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.reason}"


def unauthenticated(reason: str, category: str = "invalid") -> Denial:
    return Denial(401, "Unauthenticated", reason, category)


def forbidden(reason: str) -> Denial:
    return Denial(403, "AccessDenied", reason)


def bad_request(reason: str) -> Denial:
    return Denial(400, "InvalidRequest", reason)


def gateway_failure(reason: str) -> Denial:
    """The gateway could not complete its own work (masking, audit...): fail closed."""
    return Denial(502, "GatewayFailure", reason)
