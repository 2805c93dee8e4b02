"""SQLite audit rows, written by one thread in batched transactions.

Flows await `record()`, which resolves only once the row's transaction has committed, so a
response is never released unrecorded and the event loop never waits on disk I/O.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

logger = logging.getLogger(__name__)

FLOWS_TABLE = "flows"
COLUMNS: dict[str, type] = {
    "id": int,
    "ts": str,
    "flow_id": str,
    "policy_version": str,
    "client": str,
    "subject": str,
    "issuer": str,
    "roles": str,
    "role": str,
    "purpose": str,
    "method": str,
    "path": str,
    "operation": str,
    "resource": str,
    "decision": str,
    "reason": str,
    "masks": str,
    "status": int,
    "bytes_upstream": int,
    "bytes_returned": int,
    "latency_ms": float,
    "upstream_sha256": str,
    "returned_sha256": str,
}


INSERT_ROW = "INSERT INTO {} ({}) VALUES ({})".format(
    FLOWS_TABLE,
    ", ".join(c for c in COLUMNS if c != "id"),
    ", ".join(f":{c}" for c in COLUMNS if c != "id"),
)


class AuditWriteError(RuntimeError):
    """The row could not be made durable; the flow must be denied."""


@dataclass
class AuditRecord:
    flow_id: str
    method: str
    path: str
    decision: str
    reason: str
    status: int
    ts: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    policy_version: str | None = None
    client: str | None = None
    subject: str | None = None
    issuer: str | None = None
    roles: list[str] = field(default_factory=list)
    role: str | None = None
    purpose: str | None = None
    operation: str | None = None
    resource: str | None = None
    masks: dict[str, Any] = field(default_factory=dict)
    bytes_upstream: int | None = None
    bytes_returned: int | None = None
    latency_ms: float | None = None
    upstream_sha256: str | None = None
    returned_sha256: str | None = None

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["roles"] = json.dumps(self.roles)
        row["masks"] = json.dumps(self.masks, sort_keys=True)
        return row


_STOP = object()


class AuditLog:
    """Owns the SQLite file; `record` from any coroutine, `close` once at shutdown."""

    def __init__(
        self,
        path: str | Path,
        batch_max_rows: int = 256,
        batch_max_wait_ms: int = 0,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout = busy_timeout_ms / 1000
        self._batch_rows = batch_max_rows
        self._batch_wait = batch_max_wait_ms / 1000
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.written = 0

    def open(self) -> None:
        """Create the schema synchronously so an unwritable path fails start-up, not a flow."""
        db = self._connect()
        db.conn.close()
        self._thread = threading.Thread(target=self._run, name="tracegate-audit", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    async def record(self, record: AuditRecord) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise AuditWriteError("audit writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((record.to_row(), loop, future))
        await future

    def _connect(self) -> sqlite_utils.Database:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if FLOWS_TABLE not in db.table_names():
            db[FLOWS_TABLE].create(COLUMNS, pk="id")
            db[FLOWS_TABLE].create_index(["flow_id"])
            db[FLOWS_TABLE].create_index(["subject", "ts"])
        return db

    def _run(self) -> None:
        db: sqlite_utils.Database | None = None
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self._batch_wait
            while len(batch) < self._batch_rows:
                try:
                    item = self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            error: BaseException | None = None
            try:
                if db is None:
                    db = self._connect()
                # One transaction per batch; a prepared statement, since sqlite-utils'
                # insert_all re-inspects the schema on every call.
                with db.conn:
                    db.conn.execute("BEGIN IMMEDIATE")
                    db.conn.executemany(INSERT_ROW, [row for row, _, _ in batch])
                self.written += len(batch)
            except Exception as exc:  # the flows waiting on this batch are denied
                error = exc
                self.failures += len(batch)
                logger.error("tracegate: audit write failed: %s", exc)
                db = None
            for _, loop, future in batch:
                loop.call_soon_threadsafe(_settle, future, error)
        if db is not None:
            db.conn.close()


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(AuditWriteError(f"audit write failed: {error}"))
