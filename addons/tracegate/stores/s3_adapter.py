"""The S3 store: one bucket, path-style reads, objects masked whole, listings filtered."""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from tracegate.content import document_kind
from tracegate.denial import Denial, gateway_failure
from tracegate.exchange import JSON, ClientResponse, Exchange, IncomingRequest, UpstreamRequest
from tracegate.exchange import json_error as json_error_body
from tracegate.masking import BodyError
from tracegate.stores import s3
from tracegate.stores.adapter import SignedStoreAdapter
from tracegate.stores.s3_config import S3UpstreamConfig

if TYPE_CHECKING:
    import httpx

    from tracegate.config import GatewayConfig
    from tracegate.masking import Masker
    from tracegate.stores.sigv4 import UpstreamSigner


@dataclass(frozen=True)
class ObjectConditions:
    """The client's Range and conditions: they refer to the masked object, so we answer them."""

    range_header: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None


class S3Store(SignedStoreAdapter):
    kind = "s3"

    def __init__(self, config: GatewayConfig, signer: UpstreamSigner) -> None:
        super().__init__(config, signer)
        assert isinstance(config.upstream, S3UpstreamConfig)
        self.upstream = config.upstream

    def parse(self, request: IncomingRequest) -> s3.Access:
        path = s3.path_style(request.path, request.host, self.config.identity.sts.public_host)
        return s3.parse_request(request.method, path, request.query, self.upstream.bucket)

    def upstream_request(self, exchange: Exchange) -> UpstreamRequest:
        access = exchange.access
        assert isinstance(access, s3.Access)
        request = exchange.request
        method = request.method.upper()
        query: list[tuple[str, str]] = []
        if access.operation in s3.OBJECT_OPERATIONS:
            exchange.store_state = ObjectConditions(
                request.header("range"),
                request.header("if-match"),
                request.header("if-none-match"),
                request.header("if-modified-since"),
                request.header("if-unmodified-since"),
            )
            method = "GET"  # HEAD must report the masked size, so fetch the object
        elif access.operation in s3.LIST_OPERATIONS:
            query = [(k, v) for k, v in request.query if k.lower() != "x-id"]
        path = access.upstream_path()
        if query:
            path += "?" + urlencode(sorted(query), quote_via=quote, safe="-_.~")
        url = f"{self._scheme}://{self._netloc}{path}"
        # Conditions are answered here against the masked object, never forwarded (the store
        # would answer them about its own bytes, and a 304 would carry its ETag).
        headers = {"host": self._netloc, "accept-encoding": "identity"}
        signed = self.signer.sign(method, url, headers)
        return UpstreamRequest(method, self._scheme, self._host, self._port, path, signed)

    def respond(
        self,
        exchange: Exchange,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        base: dict[str, str | None],
        masker: Masker,
    ) -> ClientResponse:
        access, grant = exchange.access, exchange.grant
        assert isinstance(access, s3.Access) and grant is not None
        # Only allow-listed store headers are served (user metadata, content hashes, cookies,
        # redirects... are not); the answer's headers are built from scratch.
        base = {**s3.served_headers(headers), **base}
        if status in (301, 302, 303, 307, 308):
            raise gateway_failure(f"the store answered a redirect ({status}); not followed")
        if status >= 300:
            return _store_error(status, body, base)
        if access.operation in s3.LIST_OPERATIONS:
            refused: list[str] = []

            def rename(keys: list[str]) -> list[str]:
                masked = masker.mask_envelope(list(keys), exchange.report)
                refused.extend(k for k, m in zip(keys, masked, strict=True) if k != m)
                return masked

            try:
                result = s3.filter_listing(body, grant.prefixes, rename)
            except Exception as exc:
                raise gateway_failure(f"cannot parse the store's listing: {exc}") from None
            if refused and grant.scope.listing_keys == "refuse":
                raise Denial(
                    403,
                    "AccessDenied",
                    f"{len(refused)} key name(s) in this listing hold personal data or a secret "
                    "(listing_keys: refuse)",
                )
            exchange.report.listing_removed = result.removed
            return ClientResponse(status, result.body, _present(base), replace_headers=True)
        if access.operation == "HeadBucket":
            return ClientResponse(status, b"", _present(base), replace_headers=True, head=True)
        return self._object(exchange, headers, body, base, masker)

    def _object(
        self,
        exchange: Exchange,
        headers: Mapping[str, str],
        body: bytes,
        base: dict[str, str | None],
        masker: Masker,
    ) -> ClientResponse:
        access = exchange.access
        assert isinstance(access, s3.Access)
        conditions = exchange.store_state or ObjectConditions()
        kind = document_kind(headers.get("content-type"), access.key)
        try:
            # Gateway.respond hashed exactly these bytes for the audit row.
            masked = masker.mask_body(body, kind, exchange.report, digest=exchange.upstream_sha256)
        except BodyError as exc:
            raise Denial(502, "UnmaskableContent", f"{access.key}: {exc}") from None
        etag = s3.etag_for(masked)
        head = access.operation == "HeadObject"
        if conditions.if_match and conditions.if_match.strip() not in (etag, "*"):
            raise Denial(412, "PreconditionFailed", "If-Match does not match the served ETag")
        if conditions.if_none_match and conditions.if_none_match.strip() in (etag, "*"):
            return ClientResponse(
                304, b"", _present({**base, "etag": etag}), replace_headers=True, head=True
            )
        modified = _date(headers.get("last-modified"))
        since = _date(conditions.if_modified_since)
        if modified and since and modified <= since and not conditions.if_none_match:
            return ClientResponse(
                304, b"", _present({**base, "etag": etag}), replace_headers=True, head=True
            )
        before = _date(conditions.if_unmodified_since)
        if modified and before and modified > before and not conditions.if_match:
            raise Denial(412, "PreconditionFailed", "the object was modified since then")
        content_type = "application/x-ndjson" if kind == "jsonl" else JSON
        changes = {**base, "content-type": content_type}
        if conditions.range_header and not head:
            byte_range = s3.parse_range(conditions.range_header, len(masked))
            changes.update(s3.rewritten_object_headers(headers, masked, partial=True))
            changes["content-range"] = byte_range.content_range(len(masked))
            changes["accept-ranges"] = "bytes"
            part = masked[byte_range.start : byte_range.end + 1]
            return ClientResponse(206, part, _present(changes), replace_headers=True)
        changes.update(s3.rewritten_object_headers(headers, masked, partial=False))
        changes["accept-ranges"] = "bytes"
        return ClientResponse(200, masked, _present(changes), replace_headers=True, head=head)

    def error_body(self, exchange: Exchange, denial: Denial) -> tuple[bytes, dict[str, str]]:
        """S3's XML error for AWS SDKs (they parse it), JSON for everyone else."""
        request = exchange.request
        if request.from_aws_sdk:
            resource = exchange.access.resource if exchange.access else request.path
            body = s3.error_body(denial, resource, exchange.flow_id)
            return body, {"content-type": "application/xml"}
        return json_error_body(denial, exchange.flow_id), {"content-type": JSON}

    async def readiness(self, client: httpx.AsyncClient) -> tuple[bool, str]:
        """An empty listing of the bucket, signed with the gateway's own credentials: it needs
        exactly the read permission the gateway uses (HeadBucket's mapping varies by server)."""
        bucket = self.upstream.bucket
        url = f"{self.upstream.endpoint}/{bucket}?list-type=2&max-keys=0"
        headers = self.signer.sign("GET", url, {"host": self._netloc})
        response = await client.get(url, headers=headers)
        if response.status_code in (401, 403):
            return False, f"store refused the gateway's credentials ({response.status_code})"
        if response.status_code == 404:
            return False, f"bucket {bucket!r} not found"
        if response.status_code >= 400:
            return False, f"store answered {response.status_code}"
        return True, f"bucket {bucket!r} reachable"


def _present(headers: dict[str, str | None]) -> dict[str, str | None]:
    return {k: v for k, v in headers.items() if v is not None}


def _date(value: str | None):
    """An HTTP date (RFC 9110), or None when absent or unreadable (then it is ignored)."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def _store_error(status: int, body: bytes, base: dict[str, str | None]) -> ClientResponse:
    """Pass the store's own error (NoSuchKey...) only when it is an S3 error document."""
    if status == 304 or not body:
        return ClientResponse(status, b"", _present(base), replace_headers=True, head=True)
    stripped = body.lstrip()
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<Error>"):
        head = stripped[:400]
        if b"<Error>" in head and b"<ListBucketResult" not in head:
            return ClientResponse(status, body, _present(base), replace_headers=True)
    raise gateway_failure(f"the store answered {status} with an unexpected body")
