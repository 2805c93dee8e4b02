"""Audited flows as mitmproxy flows: `mitmweb -r FILE` opens exactly what was served.

This is the one audit module that imports mitmproxy: the `.mitm` format is mitmproxy's own, and
HAR is produced by mitmproxy's SaveHar addon from the same flows. Only what the requester saw
is in them (their request without credentials, the masked response), never the store's body.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mitmproxy import connection, http, io
from mitmproxy.addons.savehar import SaveHar

from tracegate.audit.bodies import decompress


def to_flow(row: dict[str, Any], body: dict[str, Any] | None) -> http.HTTPFlow:
    request_info = json.loads(body["request"]) if body else {}
    started = body["ts_start"] if body else 0.0
    ended = body["ts_end"] if body else started
    host = request_info.get("host") or "tracegate"
    port = request_info.get("port") or 80
    client = connection.Client(
        peername=(row.get("client") or "0.0.0.0", 0),
        sockname=(host, port),
        timestamp_start=started,
    )
    server = connection.Server(address=(host, port))
    flow = http.HTTPFlow(client, server)
    flow.id = row["flow_id"]
    query = "&".join(f"{k}={v}" for k, v in request_info.get("query", []))
    path = row["path"] + (f"?{query}" if query else "")
    scheme = request_info.get("scheme", "http")
    flow.request = http.Request.make(
        row["method"], f"{scheme}://{host}:{port}{path}", b"", _headers(request_info)
    )
    flow.request.timestamp_start = flow.request.timestamp_end = started
    if body is not None:
        flow.response = http.Response.make(
            body["status"], b"", _headers({"headers": json.loads(body["response_headers"])})
        )
        flow.response.raw_content = decompress(body["response_body"])
        flow.response.timestamp_start = flow.response.timestamp_end = ended
    flow.comment = f"tracegate {row['decision']}: {row['reason']}"
    flow.metadata["tracegate"] = {
        key: row.get(key)
        for key in (
            "subject",
            "role",
            "purpose",
            "operation",
            "resource",
            "decision",
            "reason",
            "policy_version",
            "session_id",
            "identity",
        )
    }
    if body is not None and body["truncated"]:
        flow.metadata["tracegate"]["body_truncated"] = True
    flow.live = False
    return flow


def _headers(info: dict[str, Any]) -> http.Headers:
    return http.Headers([(k.encode(), v.encode()) for k, v in info.get("headers", [])])


def write_mitm(flows: Iterable[http.HTTPFlow], path: str | Path) -> int:
    count = 0
    with open(path, "wb") as handle:
        writer = io.FlowWriter(handle)
        for flow in flows:
            writer.add(flow)
            count += 1
    return count


def write_har(flows: Iterable[http.HTTPFlow], path: str | Path) -> int:
    flows = [f for f in flows if f.response is not None]
    Path(path).write_text(json.dumps(SaveHar().make_har(flows), indent=2))
    return len(flows)
