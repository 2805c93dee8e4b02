"""A small local server shaped like Langfuse's public API, for the demo and the tests.

Langfuse itself (a Next.js app with Postgres and ClickHouse) cannot run here, so this serves
the three reads tracegate's Langfuse route map covers, with the response shapes of Langfuse's
public API reference: `GET /api/public/traces/{traceId}` (a trace with its observations in
full), `GET /api/public/traces` and `GET /api/public/observations` (pages: `data[]` and
`meta {page, limit, totalItems, totalPages}`), and `GET /api/public/health`. Like Langfuse, it
takes HTTP basic auth with a project's public and secret key and then serves every trace of the
project; a wrong key gets 401. It records each request it serves, so tests can see what the
gateway sent.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tracegate.demo.traces import langfuse_project

TRACE_FILTERS = ("userId", "name", "sessionId", "tags")
OBSERVATION_FILTERS = ("traceId", "type", "name", "userId")


@dataclass
class LocalLangfuse:
    """`start()` serves on a free loopback port; `stop()` ends it."""

    public_key: str = field(default_factory=lambda: "pk-lf-" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: "sk-lf-" + secrets.token_hex(16))
    traces: list[dict[str, Any]] = field(default_factory=langfuse_project)
    requests: list[dict[str, Any]] = field(default_factory=list)
    # path -> (status, content type, body): answers that replace the API's, for tests of a
    # store that misbehaves.
    canned: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def gateway_environment(self) -> dict[str, str]:
        """The gateway's own key pair, as rules/langfuse.yaml reads it."""
        return {
            "TRACEGATE_LANGFUSE_PUBLIC_KEY": self.public_key,
            "TRACEGATE_LANGFUSE_SECRET_KEY": self.secret_key,
        }

    def start(self) -> LocalLangfuse:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # -- the API -------------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:
        if path == "/api/public/health":
            return 200, {"status": "OK", "version": "3.0.0-local"}
        if path.startswith("/api/public/traces/"):
            trace_id = unquote(path.removeprefix("/api/public/traces/"))
            for trace in self.traces:
                if trace["id"] == trace_id:
                    return 200, trace
            return 404, {"message": f"Trace {trace_id} not found", "error": "LangfuseNotFoundError"}
        if path == "/api/public/traces":
            rows = [_trace_summary(t) for t in self.traces if _matches(t, query, TRACE_FILTERS)]
            return _page(rows, query)
        if path == "/api/public/observations":
            observations = [
                {**o, "userId": t["userId"]} for t in self.traces for o in t["observations"]
            ]
            rows = [o for o in observations if _matches(o, query, OBSERVATION_FILTERS)]
            for row in rows:
                row.pop("userId")
            return _page(rows, query)
        return 404, {"message": "Not found"}

    def authorised(self, header: str | None) -> bool:
        expected = base64.b64encode(f"{self.public_key}:{self.secret_key}".encode()).decode()
        return header == f"Basic {expected}"


def _handler(api: LocalLangfuse) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = dict(parse_qsl(url.query))
            api.requests.append(
                {"path": url.path, "query": query, "headers": dict(self.headers.items())}
            )
            if not api.authorised(self.headers.get("authorization")):
                return self._json(401, {"message": "Invalid authorization header"})
            if url.path in api.canned:
                status, content_type, body = api.canned[url.path]
                return self._send(status, content_type, body)
            self._json(*api.answer(url.path, query))

        def _json(self, status: int, body: Any) -> None:
            self._send(status, "application/json; charset=utf-8", json.dumps(body).encode())

        def _send(self, status: int, content_type: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _trace_summary(trace: dict[str, Any]) -> dict[str, Any]:
    """A trace as the list endpoint gives it: observations and scores as ids only."""
    return {
        **trace,
        "observations": [o["id"] for o in trace["observations"]],
        "scores": [s["id"] for s in trace["scores"]],
    }


def _matches(row: dict[str, Any], query: dict[str, str], filters: tuple[str, ...]) -> bool:
    for name in filters:
        if name not in query:
            continue
        value = row.get(name)
        if isinstance(value, list) and query[name] not in value:
            return False
        if not isinstance(value, list) and value != query[name]:
            return False
    return True


def _page(rows: list[dict[str, Any]], query: dict[str, str]) -> tuple[int, Any]:
    try:
        page = max(1, int(query.get("page", "1")))
        limit = max(1, min(100, int(query.get("limit", "50"))))
    except ValueError:
        return 400, {"message": "Invalid request data", "error": "InvalidRequestError"}
    start = (page - 1) * limit
    meta = {
        "page": page,
        "limit": limit,
        "totalItems": len(rows),
        "totalPages": math.ceil(len(rows) / limit),
    }
    return 200, {"data": rows[start : start + limit], "meta": meta}


def main() -> None:
    """`python -m tracegate.demo.langfuse --port N --public-key PK --secret-key SK`: serve in
    a process of its own (the benchmark keeps the server out of its client's interpreter)."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--secret-key", required=True)
    args = parser.parse_args()
    api = LocalLangfuse(public_key=args.public_key, secret_key=args.secret_key, port=args.port)
    api.start()
    print(f"langfuse-shaped API listening at 127.0.0.1:{api.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
