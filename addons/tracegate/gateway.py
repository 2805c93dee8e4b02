"""One request through tracegate, from the client's headers to the masked answer.

`Gateway` holds everything one config version needs (validator, signer, maskers) and exposes
two steps that the mitmproxy addons, the CLI and the tests share:

- `authorize`: identity -> access -> policy -> the signed request to send upstream;
- `respond`: the store's answer -> what the client may see (masked, filtered, headers fixed).

Each step fills in the flow's `Exchange`, from which the audit row is made, and raises a
`Denial` for anything it cannot do safely.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from tracegate.approvals.rules import ApprovalNeed, request_need
from tracegate.audit.log import AuditRecord
from tracegate.config import ConfigError, GatewayConfig
from tracegate.content import body_too_large, decode_body, document_kind
from tracegate.denial import Denial, bad_request, gateway_failure
from tracegate.identity.oidc import TokenValidator, bearer_token
from tracegate.identity.principal import Principal
from tracegate.identity.saml import SamlValidator
from tracegate.masking import BodyError, Masker, MaskReport
from tracegate.policy import Grant, decide, outside_scope, roles_of
from tracegate.stores import dynamodb, s3
from tracegate.stores.credentials import load_credentials
from tracegate.stores.sigv4 import UpstreamSigner

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

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def from_aws_sdk(self) -> bool:
        """AWS SDKs parse XML errors; everyone else gets JSON."""
        auth = self.headers.get("authorization", "")
        return auth.startswith("AWS4-HMAC-SHA256") or "x-amz-date" in self.headers


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
    access: s3.Access | dynamodb.DynamoAccess | None = None
    upstream_body: bytes = b""  # DynamoDB: the request as scoped for the store
    partition_value: Any = None  # DynamoDB: the typed value rows must have
    report: MaskReport = field(default_factory=MaskReport)
    range_header: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    decision: str = "pending"
    reason: str = ""
    status: int | None = None
    bytes_upstream: int | None = None
    upstream_sha256: str | None = None
    bytes_returned: int | None = None
    returned_sha256: str | None = None
    token_digest: str | None = None  # in memory only: groups a token's flows into a session
    session_id: str | None = None
    denial_code: str | None = None
    denial_category: str = ""
    upstream_seconds: float | None = None
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
        )


class Gateway:
    """Decides and masks flows under one validated config version."""

    def __init__(
        self,
        config: GatewayConfig,
        signer: UpstreamSigner,
        hash_key: bytes | None,
        validator: TokenValidator | None = None,
    ) -> None:
        self.config = config
        self.version = config.version_hash()
        self.signer = signer
        self.validator = validator or TokenValidator(config.identity)
        self.saml = SamlValidator(config.identity) if config.identity.saml else None
        self._maskers: dict[tuple[str, str], Masker] = {}
        for role_name, role in config.roles.items():
            for purpose, scope in role.scopes.items():
                self._maskers[(role_name, purpose)] = Masker(scope, hash_key)
        endpoint = urlsplit(config.upstream.endpoint)
        self._scheme = endpoint.scheme
        self._host = endpoint.hostname or ""
        self._port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
        self._netloc = endpoint.netloc

    @classmethod
    def from_config(cls, config: GatewayConfig) -> Gateway:
        """Build from a config, reading secrets from the environment; ConfigError if missing."""
        credentials = load_credentials(config.upstream.credentials)
        signer = UpstreamSigner(credentials, config.upstream.region, config.upstream.kind)
        env = config.masking.hash_key_env
        hash_key = os.environ.get(env, "").encode() or None
        needs_hash = any(
            m.action == "hash"
            for role in config.roles.values()
            for scope in role.scopes.values()
            for m in scope.masks
        )
        if needs_hash and hash_key is None:
            raise ConfigError(
                f"masking.hash_key_env: environment variable {env} is not set (hash masks need it)"
            )
        return cls(config, signer, hash_key)

    def new_exchange(self, flow_id: str, request: IncomingRequest) -> Exchange:
        return Exchange(flow_id=flow_id, request=request, policy_version=self.version)

    # -- request ---------------------------------------------------------------------

    async def authorize(self, exchange: Exchange) -> None:
        """Identity, access, policy, and whether a human must approve; raises Denial.

        `upstream_request` then makes the signed request, once any approval is given."""
        request = exchange.request
        if request.absolute_form:
            raise bad_request("absolute-form request targets are not accepted")
        if self.config.listen.require_tls and not request.tls:
            raise bad_request("plaintext HTTP is not accepted on this listener; use HTTPS")
        saml = request.header(self.config.identity.saml_header)
        if saml and self.saml is not None:
            exchange.principal = self.saml.validate(saml)
        else:
            token = bearer_token(dict(request.headers), self.config.identity.token_header)
            exchange.token_digest = hashlib.sha256(token.encode()).hexdigest()
            exchange.principal = await self.validator.validate(token)
        exchange.roles = roles_of(exchange.principal, self.config)
        if self.config.upstream.kind == "dynamodb":
            exchange.access = dynamodb.parse_request(
                request.method, request.path, request.header("x-amz-target"), request.body
            )
        else:
            exchange.access = s3.parse_request(
                request.method, request.path, request.query, self.config.upstream.bucket
            )
        decision = decide(
            exchange.principal,
            self.config,
            exchange.access,
            purpose=request.header(PURPOSE_HEADER),
            role=request.header(ROLE_HEADER),
            roles=exchange.roles,
        )
        exchange.grant = decision.grant
        scope = decision.grant.scope
        need, later = request_need(scope, exchange.access, request.query, decision.beyond_scope)
        if decision.beyond_scope:
            if need is None:
                raise outside_scope(exchange.access, scope, decision.grant.role)
            exchange.grant = decision.grant.widened()
        exchange.approval_need, exchange.response_rules = need, later
        exchange.decision, exchange.reason = "allow", decision.reason
        if isinstance(exchange.access, dynamodb.DynamoAccess):
            scoped = dynamodb.scope_request(exchange.access, scope, exchange.principal)
            exchange.upstream_body = dynamodb.dumps(scoped.body)
            exchange.partition_value = scoped.partition_value
            if scoped.notes:
                exchange.reason += "; " + "; ".join(scoped.notes)

    def upstream_request(self, exchange: Exchange) -> UpstreamRequest:
        access = exchange.access
        assert access is not None
        if isinstance(access, dynamodb.DynamoAccess):
            headers = {
                "host": self._netloc,
                "content-type": dynamodb.CONTENT_TYPE,
                "x-amz-target": dynamodb.TARGET_PREFIX + access.operation,
                "accept-encoding": "identity",
            }
            body = exchange.upstream_body
            signed = self.signer.sign("POST", f"{self._scheme}://{self._netloc}/", headers, body)
            return UpstreamRequest("POST", self._scheme, self._host, self._port, "/", signed, body)
        request = exchange.request
        method = request.method.upper()
        query: list[tuple[str, str]] = []
        if access.operation in s3.OBJECT_OPERATIONS:
            # The client's Range and conditions refer to the masked object: we answer them.
            exchange.range_header = request.header("range")
            exchange.if_match = request.header("if-match")
            exchange.if_none_match = request.header("if-none-match")
            method = "GET"  # HEAD must report the masked size, so fetch the object
        elif access.operation in s3.LIST_OPERATIONS:
            query = [(k, v) for k, v in request.query if k.lower() != "x-id"]
        path = access.upstream_path()
        if query:
            path += "?" + urlencode(sorted(query), quote_via=quote, safe="-_.~")
        url = f"{self._scheme}://{self._netloc}{path}"
        headers = {"host": self._netloc, "accept-encoding": "identity"}
        for name in ("if-modified-since", "if-unmodified-since"):
            value = request.header(name)
            if value and access.operation in s3.OBJECT_OPERATIONS:
                headers[name] = value
        signed = self.signer.sign(method, url, headers)
        return UpstreamRequest(method, self._scheme, self._host, self._port, path, signed)

    # -- response --------------------------------------------------------------------

    def respond(
        self, exchange: Exchange, status: int, headers: Mapping[str, str], raw_body: bytes
    ) -> ClientResponse:
        """What the client may see of the answer; raises Denial if it cannot be made safe."""
        access, grant = exchange.access, exchange.grant
        assert access is not None and grant is not None
        limit = self.config.limits.max_body_bytes
        if len(raw_body) > limit:
            raise body_too_large(limit)
        lower = {k.lower(): v for k, v in headers.items()}
        body = decode_body(raw_body, lower.get("content-encoding"), limit)
        exchange.bytes_upstream = len(body)
        exchange.upstream_sha256 = hashlib.sha256(body).hexdigest()
        base: dict[str, str | None] = {
            "content-encoding": None,
            "x-tracegate-decision": "allow",
            "x-tracegate-flow": exchange.flow_id,
            "x-tracegate-policy": self.version,
            # User metadata is not masked, so it is not served.
            **{k: None for k in lower if k.startswith("x-amz-meta-")},
        }
        if exchange.approval is not None:
            base["x-tracegate-approval"] = str(exchange.approval["id"])
        if isinstance(access, dynamodb.DynamoAccess):
            return self._dynamodb(exchange, status, body, base)
        if status >= 300:
            return self._store_error(status, lower, body, base)
        if access.operation in s3.LIST_OPERATIONS:
            try:
                result = s3.filter_listing(body, grant.prefixes)
            except Exception as exc:
                raise gateway_failure(f"cannot parse the store's listing: {exc}") from None
            exchange.report.listing_removed = result.removed
            return ClientResponse(status, result.body, base)
        if access.operation == "HeadBucket":
            return ClientResponse(status, b"", base, head=True)
        return self._object(exchange, lower, body, base)

    def _object(
        self,
        exchange: Exchange,
        headers: dict[str, str],
        body: bytes,
        base: dict[str, str | None],
    ) -> ClientResponse:
        access = exchange.access
        assert access is not None and exchange.grant is not None
        kind = document_kind(headers.get("content-type"), access.key)
        masker = self._maskers[(exchange.grant.role, exchange.grant.purpose)]
        try:
            masked = masker.mask_body(body, kind, exchange.report)
        except BodyError as exc:
            raise Denial(502, "UnmaskableContent", f"{access.key}: {exc}") from None
        etag = s3.etag_for(masked)
        head = access.operation == "HeadObject"
        if exchange.if_match and exchange.if_match.strip() not in (etag, "*"):
            raise Denial(412, "PreconditionFailed", "If-Match does not match the served ETag")
        if exchange.if_none_match and exchange.if_none_match.strip() in (etag, "*"):
            return ClientResponse(304, b"", {**base, "etag": etag}, head=True)
        changes = {**base, "content-type": _content_type(kind)}
        if exchange.range_header and not head:
            byte_range = s3.parse_range(exchange.range_header, len(masked))
            changes.update(s3.rewritten_object_headers(headers, masked, partial=True))
            changes["content-range"] = byte_range.content_range(len(masked))
            changes["accept-ranges"] = "bytes"
            return ClientResponse(206, masked[byte_range.start : byte_range.end + 1], changes)
        changes.update(s3.rewritten_object_headers(headers, masked, partial=False))
        changes["accept-ranges"] = "bytes"
        return ClientResponse(200, masked, changes, head=head)

    def _dynamodb(
        self, exchange: Exchange, status: int, body: bytes, base: dict[str, str | None]
    ) -> ClientResponse:
        """Items outside the row scope are removed; the rest masked as plain JSON, re-typed."""
        access, grant = exchange.access, exchange.grant
        assert isinstance(access, dynamodb.DynamoAccess) and grant is not None
        headers = {**base, "content-type": dynamodb.CONTENT_TYPE}
        if status >= 300:
            try:
                error = json.loads(body)
            except ValueError:
                error = None
            if not isinstance(error, dict) or "__type" not in error:
                raise gateway_failure(f"the store answered {status} with an unexpected body")
            return ClientResponse(status, body, {**headers, "x-amz-crc32": dynamodb.crc32(body)})
        try:
            response = json.loads(body, parse_float=Decimal, parse_int=Decimal)
        except ValueError:
            raise gateway_failure("the store's answer is not JSON") from None
        masker = self._maskers[(grant.role, grant.purpose)]
        partition = grant.scope.partition
        try:
            for table, items in dynamodb.items_of(access.operation, response):
                kept = []
                for item in items:
                    if partition and item.get(partition.attribute) != exchange.partition_value:
                        exchange.report.listing_removed += 1
                        continue
                    plain = dynamodb.item_to_plain(item)
                    masked = masker.mask_document(plain, exchange.report)
                    exchange.report.documents += 1
                    kept.append(dynamodb.item_to_typed(masked, item))
                dynamodb.replace_items(access.operation, response, table, kept)
        except (ValueError, KeyError, TypeError) as exc:
            raise Denial(502, "UnmaskableContent", f"cannot mask the items: {exc}") from None
        out = dynamodb.dumps(response)
        headers["x-amz-crc32"] = dynamodb.crc32(out)
        return ClientResponse(status, out, headers)

    def _store_error(
        self, status: int, headers: dict[str, str], body: bytes, base: dict[str, str | None]
    ) -> ClientResponse:
        """Pass the store's own error (NoSuchKey...) only when it is an S3 error document."""
        if status == 304 or not body:
            return ClientResponse(status, b"", base, head=True)
        stripped = body.lstrip()
        if stripped.startswith(b"<?xml") or stripped.startswith(b"<Error>"):
            head = stripped[:400]
            if b"<Error>" in head and b"<ListBucketResult" not in head:
                return ClientResponse(status, body, base)
        raise gateway_failure(f"the store answered {status} with an unexpected body")

    # -- denials ---------------------------------------------------------------------

    def render_denial(self, exchange: Exchange, denial: Denial) -> ClientResponse:
        """The client's answer to a refusal: S3 XML for AWS SDKs, JSON for everyone else."""
        request = exchange.request
        resource = exchange.access.resource if exchange.access else request.path
        headers: dict[str, str | None] = {
            "x-tracegate-decision": "deny",
            "x-tracegate-policy": self.version,
            "x-tracegate-reason": _header_safe(denial.reason),
            "x-tracegate-flow": exchange.flow_id,
            "cache-control": "no-store",
        }
        if self.config.upstream.kind == "dynamodb":
            body = dynamodb.error_body(denial)
            headers["content-type"] = dynamodb.CONTENT_TYPE
            headers["x-amz-crc32"] = dynamodb.crc32(body)
        elif request.from_aws_sdk:
            body = s3.error_body(denial, resource, exchange.flow_id)
            headers["content-type"] = "application/xml"
        else:
            body = json_error(denial, exchange.flow_id)
            headers["content-type"] = JSON
        if "approval_id" in denial.details:
            headers["x-tracegate-approval"] = str(denial.details["approval_id"])
        if denial.status == 401:
            headers["www-authenticate"] = 'Bearer realm="tracegate"'
        head = request.method.upper() == "HEAD"
        return ClientResponse(denial.status, body, headers, replace_headers=True, head=head)


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


def _content_type(kind: str) -> str:
    return "application/x-ndjson" if kind == "jsonl" else JSON


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:300]
