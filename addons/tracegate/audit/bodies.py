"""What a requester saw, as kept by the audit: their request without credentials, and the
response exactly as the gateway sent it (masked), compressed and capped in size."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

from tracegate.stores.sigv4 import CLIENT_AUTH_HEADERS


def request_summary(
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Mapping[str, str],
    identity_headers: Iterable[str],
    scheme: str = "http",
    host: str = "",
    port: int = 0,
) -> dict[str, Any]:
    hidden = CLIENT_AUTH_HEADERS | {h.lower() for h in identity_headers}
    return {
        "method": method,
        "scheme": scheme,
        "host": host,
        "port": port,
        "path": path,
        "query": [list(pair) for pair in query],
        "headers": [[k, v] for k, v in headers.items() if k.lower() not in hidden],
    }


def body_record(
    flow_id: str,
    request: dict[str, Any],
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    limit: int,
    ts_start: float,
    ts_end: float,
) -> dict[str, Any]:
    return {
        "flow_id": flow_id,
        "request": json.dumps(request),
        "status": status,
        "response_headers": json.dumps([[k, v] for k, v in headers]),
        "response_body": zlib.compress(body[:limit]),
        "truncated": int(len(body) > limit),
        "ts_start": ts_start,
        "ts_end": ts_end,
    }


def decompress(blob: bytes | None) -> bytes:
    return zlib.decompress(blob) if blob else b""
