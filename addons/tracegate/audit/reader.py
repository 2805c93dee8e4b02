"""Reading the audit trail: filtered queries, sessions, and exports for SIEMs."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The stable field list of JSONL/CSV exports (documented in the README).
EXPORT_FIELDS = [
    "id",
    "ts",
    "flow_id",
    "session_id",
    "policy_version",
    "client",
    "subject",
    "issuer",
    "roles",
    "role",
    "purpose",
    "method",
    "path",
    "operation",
    "resource",
    "decision",
    "reason",
    "code",
    "masks",
    "status",
    "bytes_upstream",
    "bytes_returned",
    "latency_ms",
    "upstream_sha256",
    "returned_sha256",
    "approval",
    "identity",
]


@dataclass(frozen=True)
class Filters:
    subject: str | None = None
    role: str | None = None
    purpose: str | None = None
    resource_prefix: str | None = None
    decision: str | None = None
    since: str | None = None  # ISO 8601, compared as text (rows use UTC 'Z' timestamps)
    until: str | None = None
    session: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        clauses, args = [], []
        for column, value in (
            ("subject", self.subject),
            ("role", self.role),
            ("purpose", self.purpose),
            ("decision", self.decision),
            ("session_id", self.session),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if self.resource_prefix is not None:
            clauses.append("substr(resource, 1, ?) = ?")
            args += [len(self.resource_prefix), self.resource_prefix]
        if self.since is not None:
            clauses.append("ts >= ?")
            args.append(self.since)
        if self.until is not None:
            clauses.append("ts < ?")
            args.append(self.until)
        return (" AND ".join(clauses) or "1 = 1"), args


class AuditReader:
    """Reads a replica's file (a path) or the shared database (an open `PortableConnection`);
    the SQL is what both understand."""

    def __init__(self, source: str | Path | Any) -> None:
        if not isinstance(source, (str, Path)):
            self.conn = source
            return
        if not Path(source).exists():
            raise FileNotFoundError(f"{source}: no such audit database")
        self.conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        self.conn.row_factory = sqlite3.Row

    def flows(self, filters: Filters = Filters(), limit: int | None = None) -> Iterator[dict]:
        where, args = filters.where()
        sql = f"SELECT * FROM flows WHERE {where} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        for row in self.conn.execute(sql, args):
            yield dict(row)

    def flow(self, flow_id: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM flows WHERE flow_id = ?", (flow_id,)).fetchone()
        return dict(row) if row else None

    def sessions(self, filters: Filters = Filters()) -> list[dict]:
        where, args = filters.where()
        sql = (
            "SELECT session_id, min(subject) AS subject, min(role) AS role, min(ts) AS first, "
            "max(ts) AS last, count(*) AS flows, "
            "CAST(sum(CASE WHEN decision = 'deny' THEN 1 ELSE 0 END) AS INTEGER) AS denied "
            f"FROM flows WHERE {where} AND session_id IS NOT NULL "
            "GROUP BY session_id ORDER BY first"
        )
        return [dict(r) for r in self.conn.execute(sql, args)]

    def body(self, flow_id: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM bodies WHERE flow_id = ?", (flow_id,)).fetchone()
        return dict(row) if row else None

    def policy(self, version: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM policies WHERE version = ?", (version,)).fetchone()
        return dict(row) if row else None

    def close(self) -> None:
        self.conn.close()


def export(rows: Iterator[dict], fmt: str) -> Iterator[str]:
    """JSONL or CSV text, with EXPORT_FIELDS in that order."""
    if fmt == "jsonl":
        for row in rows:
            record = {k: row.get(k) for k in EXPORT_FIELDS}
            for key in ("roles", "masks", "approval"):
                if isinstance(record[key], str):
                    record[key] = json.loads(record[key])
            yield json.dumps(record, separators=(",", ":")) + "\n"
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        yield buffer.getvalue()
        for row in rows:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(row)
            yield buffer.getvalue()
        return
    raise ValueError(f"unknown export format {fmt!r} (jsonl, csv)")
