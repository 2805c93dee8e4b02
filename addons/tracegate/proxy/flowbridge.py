"""Translation between mitmproxy flows and the core's plain request/response types."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from mitmproxy import http

from tracegate.exchange import ClientResponse, IncomingRequest, UpstreamRequest
from tracegate.identity.sigv4 import PRESIGN_PARAMS
from tracegate.stores.sigv4 import CLIENT_AUTH_HEADERS, SIGNING_HEADERS


def incoming(flow: http.HTTPFlow) -> IncomingRequest:
    request = flow.request
    headers: dict[str, str] = {}
    every: list[tuple[str, str]] = []
    for name, value in request.headers.items(multi=True):
        headers.setdefault(name.lower(), value)
        every.append((name.lower(), value))
    absolute = request.http_version.startswith("HTTP/1") and bool(request.authority)
    return IncomingRequest(
        method=request.method,
        path=request.path.split("?", 1)[0],
        query=tuple(request.query.items(multi=True)),
        headers=headers,
        tls=flow.client_conn.tls_established,
        absolute_form=absolute,
        client=f"{flow.client_conn.peername[0]}" if flow.client_conn.peername else "",
        connection_id=flow.client_conn.id,
        body=request.raw_content or b"",
        raw_query=request.path.partition("?")[2],
        all_headers=tuple(every),
        host=request.host_header or "",
    )


def strip_credentials(flow: http.HTTPFlow, identity_headers: Iterable[str]) -> None:
    """Drop the client's credentials from the flow, so mitmweb and saved flows never hold them."""
    for name in (*CLIENT_AUTH_HEADERS, *(h.lower() for h in identity_headers)):
        flow.request.headers.pop(name, None)
    if "x-amz-" in flow.request.path.lower():  # a presigned URL's signature and session token
        query = flow.request.query
        for name in [name for name in query if name.lower() in PRESIGN_PARAMS]:
            del query[name]


def hide_upstream_signature(flow: http.HTTPFlow, names: Iterable[str] = SIGNING_HEADERS) -> None:
    """Once the store has been asked, drop the gateway's credentials from the flow: mitmweb and
    saved flows must not hold a signature or key someone could replay against the store."""
    for name in names:
        flow.request.headers.pop(name, None)


def fingerprint(flow: http.HTTPFlow) -> str:
    """A digest of the request as an operator could edit it in mitmweb."""
    request = flow.request
    digest = hashlib.sha256()
    for part in (request.method, request.scheme, request.host, str(request.port), request.path):
        digest.update(part.encode() + b"\0")
    for name, value in request.headers.items(multi=True):
        digest.update(name.lower().encode() + b":" + value.encode() + b"\0")
    digest.update(request.raw_content or b"")
    return digest.hexdigest()


def send_upstream(flow: http.HTTPFlow, upstream: UpstreamRequest) -> None:
    """Point the flow at the store with exactly the headers the gateway signed."""
    request = flow.request
    request.method = upstream.method
    request.scheme = upstream.scheme
    request.host = upstream.host
    request.port = upstream.port
    request.path = upstream.path
    request.authority = ""
    request.headers.clear()
    for name, value in upstream.headers.items():
        request.headers[name] = value
    request.raw_content = upstream.body
    request.headers["content-length"] = str(len(upstream.body))


def apply(flow: http.HTTPFlow, answer: ClientResponse) -> http.Response:
    """Install the gateway's answer as the flow's response and return it."""
    if flow.response is None or answer.replace_headers:
        response = http.Response.make(answer.status, b"", {})
        response.headers.clear()
        flow.response = response
    response = flow.response
    response.status_code = answer.status
    response.reason = ""
    for name, value in answer.headers.items():
        if value is None:
            response.headers.pop(name, None)
        else:
            response.headers[name] = value
    response.headers.pop("transfer-encoding", None)
    # A HEAD answer describes the body it would have sent: its length, but no bytes.
    response.raw_content = b"" if answer.head else answer.body
    response.headers["content-length"] = str(len(answer.body))
    return response
