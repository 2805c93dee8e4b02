"""What a requester saw, as kept by the audit: their request without credentials, and the
response exactly as the gateway sent it (masked), compressed and capped in size."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Mapping
from typing import Any


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
    # Imported here: the audit writer process imports this module for `seal` only, and the
    # SigV4 module would bring botocore into it (a quarter of its start-up).
    from tracegate.stores.sigv4 import CLIENT_AUTH_HEADERS

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
        "response_body": None,  # `seal` compresses `served` on the audit writer's thread
        "served": body[:limit],
        "truncated": int(len(body) > limit),
        "ts_start": ts_start,
        "ts_end": ts_end,
    }


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """Compress the served bytes and note their digest. The audit writer does this on its own
    thread, off the event loop (zlib and hashlib let the event loop run meanwhile)."""
    served = record.pop("served", None)
    if served is not None:
        record["response_body"] = zlib.compress(served, 1)
        record["response_body_sha256"] = hashlib.sha256(served).hexdigest()
    return record


def body_digest(record: Mapping[str, Any]) -> str:
    """The digest of a stored body record, committed in its flow's row (so the hash chain
    covers what `audit replay` shows as served): request, status, headers, the body's own
    SHA-256 and whether it was cut."""
    canonical = {
        "flow_id": record["flow_id"],
        "request": record["request"],
        "status": record["status"],
        "response_headers": record["response_headers"],
        "response_body_sha256": record.get("response_body_sha256")
        or hashlib.sha256(decompress(record["response_body"])).hexdigest(),
        "truncated": int(record["truncated"]),
        "ts_start": record["ts_start"],
        "ts_end": record["ts_end"],
    }
    encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode()).hexdigest()


def decompress(blob: bytes | None) -> bytes:
    return zlib.decompress(blob) if blob else b""
