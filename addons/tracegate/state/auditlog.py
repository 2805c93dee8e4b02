"""The audit trail in the shared database: every replica writes, one integrator orders.

A flow's row (and its body) is committed by the replica that served it, durably
(`synchronous_commit=on`), before the response is released, and queued in `audit_pending` in
the same transaction: no lock is shared between replicas on this path and no NOTIFY is sent
from it. The elected integrator (`state.integrator`) then gives queued rows their place in the
Merkle log and signs checkpoints, so the log has one order however many replicas write.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from tracegate.audit.keys import SigningKey
from tracegate.audit.log import (
    BODY_COLUMNS,
    COLUMNS,
    STOP,
    AuditRecord,
    AuditWriteError,
    rows_of,
    settle_batch,
    take_batch,
)
from tracegate.audit.tlog import SignedCheckpoint
from tracegate.state.database import SharedDatabase
from tracegate.state.integrator import Integrator

logger = logging.getLogger(__name__)

ROW_COLUMNS = [c for c in COLUMNS if c != "id"] + ["instance"]  # the database numbers rows
INSERT_FLOW = (
    "WITH row AS (INSERT INTO flows ({}) VALUES ({}) RETURNING id) "
    "INSERT INTO audit_pending (kind, ref) SELECT 'flow', id FROM row"
).format(", ".join(ROW_COLUMNS), ", ".join(f"%({c})s" for c in ROW_COLUMNS))
INSERT_BODY = "INSERT INTO bodies ({}) VALUES ({})".format(
    ", ".join(BODY_COLUMNS), ", ".join(f"%({c})s" for c in BODY_COLUMNS)
)


class SharedAuditLog:
    """`record` from any coroutine (it returns once the row is durable), `close` at shutdown;
    the same surface as `AuditLog`, for a log every replica shares."""

    def __init__(
        self,
        database: SharedDatabase,
        instance: str,
        batch_max_rows: int = 256,
        signing_key: SigningKey | None = None,
        checkpoint_every_rows: int = 1000,
        checkpoint_every_seconds: float = 60.0,
        origin: str = "tracegate.local/audit",
        publish: Callable[[SignedCheckpoint], None] | None = None,
        integrate_every_seconds: float = 0.5,
        alert_after_seconds: float = 30.0,
    ) -> None:
        self.database = database
        self.instance = instance
        self._batch_rows = batch_max_rows
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.integrator = Integrator(
            database,
            signing_key.signer(origin) if signing_key else None,
            publish,
            every_seconds=integrate_every_seconds,
            checkpoint_every_rows=checkpoint_every_rows,
            checkpoint_every_seconds=checkpoint_every_seconds,
        )
        self.alert_after = alert_after_seconds  # a row waits longer: readiness fails
        self.failures = 0
        self.written = 0

    @property
    def target(self) -> str:
        return f"postgres:{self.database.where}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def open(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="tracegate-audit-shared", daemon=True
        )
        self._thread.start()
        self.integrator.start()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(STOP)
            self._thread.join(timeout=10)
            self._thread = None
        self.integrator.stop()

    async def record(self, record: AuditRecord) -> None:
        if not self.running:
            raise AuditWriteError("audit writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((record, loop, future))
        await future

    def record_policy(self, version: str, config_json: str) -> None:
        with self.database.connection() as conn:
            conn.execute(
                "INSERT INTO policies (version, ts, config) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (version, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), config_json),
            )

    def check(self) -> tuple[bool, str]:
        """For readiness: the writer runs and rows do not wait too long for the log."""
        if not self.running:
            return False, "audit writer is not running"
        lag = self.integrator.lag_seconds
        if lag is None:
            return False, f"audit log in {self.target}: integration lag unknown (database?)"
        if lag > self.alert_after:
            return False, (
                f"audit rows have waited {lag:.0f} s for the log (over {self.alert_after:g} s): "
                "no integrator is keeping up"
            )
        return True, f"audit log in {self.target} (integration lag {lag:.1f} s)"

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is STOP:
                return
            batch = take_batch(self._queue, first, self._batch_rows, 0.0)
            made, rows, bodies = rows_of(batch)
            self.failures += len(batch) - len(made)
            if not made:
                continue
            for row in rows:
                row["instance"] = self.instance
            error: BaseException | None = None
            try:
                with (
                    self.database.connection() as conn,
                    conn.transaction(),
                    conn.cursor() as cursor,
                ):
                    cursor.executemany(INSERT_FLOW, rows)
                    if bodies:
                        cursor.executemany(INSERT_BODY, bodies)
                self.written += len(made)
            except Exception as exc:  # DatabaseUnavailable above all: the flows are denied
                error = exc
                self.failures += len(made)
                logger.error("tracegate: audit write to %s failed: %s", self.target, exc)
            settle_batch(made, error)
