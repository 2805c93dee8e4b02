"""One flow as the core sees it: the client's request, what is sent upstream, the answer.

Plain data, no mitmproxy: `Exchange` collects what is known about a flow as the gateway decides,
and the audit row and decision log line are made from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tracegate.access import Access
from tracegate.approvals.model import ApprovalNeed
from tracegate.audit.log import AuditRecord
from tracegate.denial import Denial
from tracegate.grant import Grant
from tracegate.identity.principal import Principal
from tracegate.masking import MaskReport

PURPOSE_HEADER = "x-tracegate-purpose"
ROLE_HEADER = "x-tracegate-role"
REASON_HEADER = "x-tracegate-reason"
JSON = "application/json"


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    path: str  # without the query string, as the client sent it
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    tls: bool = False
    absolute_form: bool = False
    client: str = ""
    connection_id: str = ""  # one client connection: the audit's session
    body: bytes = b""  # only stores with request bodies (DynamoDB) look at it
    raw_query: str = ""  # as sent, for SigV4 (a `+` there is a plus, not a space)
    # Every header value in order, lower-case names (a signature covers repeated ones too).
    all_headers: tuple[tuple[str, str], ...] = ()
    # The Host (HTTP/1) or :authority (HTTP/2) the client sent: mitmproxy keeps it as is
    # (`keep_host_header`), so SigV4 and virtual-hosted addressing read what was signed.
    host: str = ""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def header_lists(self) -> dict[str, list[str]]:
        lists: dict[str, list[str]] = {}
        for name, value in self.all_headers or tuple(self.headers.items()):
            lists.setdefault(name, []).append(value)
        return lists

    @property
    def from_aws_sdk(self) -> bool:
        """AWS SDKs parse XML errors; everyone else gets JSON."""
        auth = self.headers.get("authorization", "")
        if auth.startswith("AWS4-HMAC-SHA256") or "x-amz-date" in self.headers:
            return True
        return any(name == "X-Amz-Algorithm" for name, _ in self.query)  # a SigV4 presigned URL


@dataclass(frozen=True)
class UpstreamRequest:
    method: str
    scheme: str
    host: str
    port: int
    path: str  # with the query string
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class ClientResponse:
    status: int
    body: bytes
    # Header changes over the store's headers (None removes one), or the full set when
    # `replace_headers` is true.
    headers: dict[str, str | None]
    replace_headers: bool = False
    head: bool = False  # answer to a HEAD: headers describe `body`, but no body is sent


@dataclass
class Exchange:
    """What is known about one flow so far; the audit row is made from it."""

    flow_id: str
    request: IncomingRequest
    policy_version: str
    started: float = field(default_factory=time.monotonic)
    principal: Principal | None = None
    roles: list[str] = field(default_factory=list)
    grant: Grant | None = None
    access: Access | None = None
    # What the store adapter carries from the request to the response (its own type).
    store_state: Any = None
    report: MaskReport = field(default_factory=MaskReport)
    decision: str = "pending"
    reason: str = ""
    status: int | None = None
    bytes_upstream: int | None = None
    upstream_sha256: str | None = None
    bytes_returned: int | None = None
    returned_sha256: str | None = None
    token_digest: str | None = None  # in memory only: groups a token's flows into a session
    identity: str | None = None  # how the identity came: oidc, saml, "sts <access key id>"
    session_id: str | None = None
    denial_code: str | None = None
    denial_category: str = ""
    upstream_seconds: float | None = None
    # An answer the gateway makes itself (an STS call): nothing is forwarded.
    local_answer: ClientResponse | None = None
    sts_call: bool = False
    masking_seconds: float | None = None
    # Approval: the rule holding the request, rules left for the response, and the outcome.
    approval_need: ApprovalNeed | None = None
    response_rules: list[ApprovalNeed] = field(default_factory=list)
    approval: dict[str, Any] | None = None

    @property
    def reason_given(self) -> str:
        """The requester's X-Tracegate-Reason, printable and bounded."""
        text = self.request.header(REASON_HEADER) or ""
        return "".join(c if c.isprintable() else " " for c in text)[:500].strip()

    def deny(self, denial: Denial) -> None:
        self.decision = "deny"
        self.reason = denial.reason
        self.status = denial.status
        self.denial_code = denial.code
        self.denial_category = denial.category

    def returned(self, body: bytes, status: int) -> None:
        self.status = status
        self.bytes_returned = len(body)
        self.returned_sha256 = hashlib.sha256(body).hexdigest()

    def to_log_entry(self, record: AuditRecord | None = None) -> dict[str, Any]:
        """The decision log line: the audit row's facts without digests, masks as counts."""
        record = record or self.to_audit_record()
        return {
            "flow_id": record.flow_id,
            "subject": record.subject,
            "role": record.role,
            "purpose": record.purpose,
            "operation": record.operation,
            "resource": record.resource,
            "decision": record.decision,
            "reason": record.reason,
            "masks": dict(self.report.counts) if self.decision == "allow" else {},
            "status": record.status,
            "latency_ms": record.latency_ms,
            "policy_version": record.policy_version,
        }

    def to_audit_record(self) -> AuditRecord:
        principal = self.principal
        return AuditRecord(
            flow_id=self.flow_id,
            method=self.request.method,
            path=self.request.path,
            decision=self.decision,
            reason=self.reason,
            status=self.status or 0,
            policy_version=self.policy_version,
            session_id=self.session_id,
            client=self.request.client,
            subject=principal.subject if principal else None,
            issuer=principal.issuer if principal else None,
            roles=self.roles,
            role=self.grant.role if self.grant else None,
            purpose=self.grant.purpose if self.grant else None,
            operation=self.access.operation if self.access else None,
            resource=self.access.resource if self.access else None,
            masks=self.report.to_dict() if self.decision == "allow" else {},
            bytes_upstream=self.bytes_upstream,
            bytes_returned=self.bytes_returned,
            latency_ms=round((time.monotonic() - self.started) * 1000, 3),
            upstream_sha256=self.upstream_sha256,
            returned_sha256=self.returned_sha256,
            approval=self.approval,
            identity=self.identity,
            code=self.denial_code if self.decision == "deny" else None,
        )


def json_error(denial: Denial, flow_id: str) -> bytes:
    payload: dict[str, Any] = {
        "error": {
            "status": denial.status,
            "code": denial.code,
            "reason": denial.reason,
            "flow_id": flow_id,
            **denial.details,
        }
    }
    return json.dumps(payload).encode()
