"""Audit files from the hash-chain format, brought into the Merkle log.

The old format chained each row to the one before (`row_hash = sha256(prev_hash || canonical
JSON of the row)`). Migration first checks that chain, for flows and approval events, and
refuses on the first break (a broken chain must not be laundered into a fresh log); then every
row becomes an entry of the log, flows first, then approval events, in id order.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from tracegate.audit.log import COLUMNS, FLOWS_TABLE, in_chain_format, row_entry
from tracegate.audit.tlog import MerkleLog, immediate

GENESIS = "0" * 64
EVENTS_TABLE = "approval_events"


class MigrationRefused(RuntimeError):
    pass


def _old_hash(prev_hash: str, row: dict) -> str:
    body = {k: v for k, v in row.items() if k != "row_hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(prev_hash.encode() + canonical.encode()).hexdigest()


def _check_chain(conn: sqlite3.Connection, table: str, what: str, anchor: str) -> list[dict]:
    cursor = conn.execute(f"SELECT * FROM {table} ORDER BY id")
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, values, strict=True)) for values in cursor]
    prev = anchor
    for row in rows:
        if row["prev_hash"] != prev or _old_hash(row["prev_hash"], row) != row["row_hash"]:
            raise MigrationRefused(
                f"{what} {row['id']}: the old hash chain breaks here; run the old "
                "`tracegate audit verify` on it and keep the file as evidence"
            )
        prev = row["row_hash"]
    return rows


def migrate(path: str | Path) -> tuple[int, int]:
    """Check the old chains, then log every row; (flows, approval events) brought in."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        if not in_chain_format(conn):
            raise MigrationRefused(f"{path}: nothing to migrate (no hash-chain rows)")
        with immediate(conn):
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            anchor = GENESIS
            if "checkpoints" in tables:  # a prune left the last deleted row's hash as the anchor
                found = conn.execute(
                    "SELECT row_hash FROM checkpoints WHERE kind = 'prune' ORDER BY row_id DESC"
                ).fetchone()
                anchor = found[0] if found else GENESIS
            flows = _check_chain(conn, FLOWS_TABLE, "row", anchor)
            events = _check_chain(conn, EVENTS_TABLE, "approval event", GENESIS) if (
                EVENTS_TABLE in tables
            ) else []  # fmt: skip
            columns = {r[1] for r in conn.execute(f"PRAGMA table_info({FLOWS_TABLE})")}
            for name in set(COLUMNS) - columns:
                conn.execute(f"ALTER TABLE {FLOWS_TABLE} ADD COLUMN {name} TEXT")
                for row in flows:
                    row[name] = None
            MerkleLog.create(conn)
            entries = [("flow", r["id"], row_entry("flow", r)) for r in flows]
            for event in events:
                kept = row_entry("approval_event", event)
                entries.append(("approval_event", event["id"], kept))
            MerkleLog(conn).append(entries)
        return len(flows), len(events)
    finally:
        conn.close()
