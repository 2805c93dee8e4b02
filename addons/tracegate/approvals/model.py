"""One approval: who asks for what, why it needs a human, and what the humans decided."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracegate.config import ApprovalRule

PENDING, APPROVED, DENIED, EXPIRED, CANCELLED = (
    "pending",
    "approved",
    "denied",
    "expired",
    "cancelled",
)
FINAL = frozenset({APPROVED, DENIED, EXPIRED, CANCELLED})


@dataclass(frozen=True)
class ApprovalNeed:
    """A rule that applies to this request, and why in words an approver can read."""

    rule: ApprovalRule
    why: str


def request_key(
    method: str,
    path: str,
    query: Sequence[tuple[str, str]],
    role: str,
    purpose: str,
    body: bytes = b"",
) -> str:
    """What a grant lets the requester repeat: the same method, path, query, role and purpose
    (and body: a DynamoDB request is all in its body)."""
    canonical = json.dumps(
        [
            method.upper(),
            path,
            sorted([list(p) for p in query]),
            role,
            purpose,
            hashlib.sha256(body).hexdigest(),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def new_id() -> str:
    return "apv_" + secrets.token_hex(8)


@dataclass
class Vote:
    subject: str
    issuer: str
    how: str  # "endpoint" (authenticated) or "mitmweb" (the UI's shared operator)
    at: float
    comment: str = ""
    authenticated: bool = True


@dataclass
class Approval:
    id: str
    rule_id: str
    phase: str  # "request" or "response": what is held
    why: str
    required: int
    approver_roles: list[str]
    approver_groups: list[str]
    requester_subject: str
    requester_issuer: str
    role: str
    purpose: str
    reason: str  # the requester's X-Tracegate-Reason
    method: str
    path: str
    query: list[list[str]]
    operation: str
    resource: str
    request_key: str
    flow_id: str
    created_at: float
    wait_until: float  # the client is answered "pending" after this
    pending_until: float  # the approval expires undecided after this
    grant_seconds: float
    status: str = PENDING
    votes: list[Vote] = field(default_factory=list)
    decided_at: float | None = None
    decided_by: str = ""
    decision_how: str = ""
    decision_comment: str = ""
    grant_until: float | None = None

    def summary(self) -> dict[str, Any]:
        """What an approver sees: never the data, only the request and its context."""
        data = asdict(self)
        data["votes"] = [asdict(v) for v in self.votes]
        data["request"] = {
            "method": data.pop("method"),
            "path": data.pop("path"),
            "query": data.pop("query"),
            "operation": data.pop("operation"),
            "resource": data.pop("resource"),
        }
        data["requester"] = {
            "subject": data.pop("requester_subject"),
            "issuer": data.pop("requester_issuer"),
        }
        data["approvers"] = {
            "roles": data.pop("approver_roles"),
            "groups": data.pop("approver_groups"),
        }
        return data

    def request_summary_line(self) -> str:
        return f"{self.operation} {self.resource}"

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["approver_roles"] = json.dumps(self.approver_roles)
        row["approver_groups"] = json.dumps(self.approver_groups)
        row["query"] = json.dumps(self.query)
        row["votes"] = json.dumps([asdict(v) for v in self.votes])
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Approval:
        data = dict(row)
        for name in ("approver_roles", "approver_groups", "query"):
            data[name] = json.loads(data[name])
        data["votes"] = [Vote(**v) for v in json.loads(data["votes"])]
        return cls(**data)
