"""The one replica that orders the shared audit log (the Trillian/Tessera sequencer pattern).

Every replica runs an `Integrator`; the one holding the session advisory lock INTEGRATOR_LOCK
(on a connection of its own) is the integrator: every `every_seconds` it takes the queued rows
(`audit_pending`), gives them contiguous leaf indices, extends the Merkle tree and, every N
entries or M seconds, signs a checkpoint, all in one transaction under the log's lock. If its
process dies, PostgreSQL drops its connection and so its lock, and another replica's next try
takes over. Two integrators can never fork the log: leaf indices are a primary key, a row can
enter the log once, and each checkpoint must name the previous one, uniquely (`prev_size`), so
the loser of any race rolls back. Each replica also measures how long the oldest queued row
has waited (the integration lag), for its metrics and readiness.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from tracegate.audit.integrity import PENDING_TABLE
from tracegate.audit.log import row_entry
from tracegate.audit.note import NoteSigner
from tracegate.audit.tlog import LogForked, MerkleLog, SignedCheckpoint
from tracegate.state.database import SharedDatabase
from tracegate.state.portable import PortableConnection

logger = logging.getLogger(__name__)

INTEGRATOR_LOCK = 0x7467696E74  # "tgint": held for as long as a replica integrates
BATCH = 1000  # queued rows per transaction
TABLES = {"flow": "flows", "approval_event": "approval_events"}


class Integrator:
    def __init__(
        self,
        database: SharedDatabase,
        signer: NoteSigner | None,
        publish: Callable[[SignedCheckpoint], None] | None,
        every_seconds: float = 0.5,
        checkpoint_every_rows: int = 1000,
        checkpoint_every_seconds: float = 60.0,
    ) -> None:
        self.database = database
        self.signer = signer
        self.publish = publish
        self.every = every_seconds
        self.checkpoint_rows = checkpoint_every_rows
        self.checkpoint_seconds = checkpoint_every_seconds
        self.leader = False
        self.lag_seconds: float | None = None  # None: not measured (database unreachable)
        self.integrated = 0
        self.failures = 0
        self._since_checkpoint = 0
        self._checkpoint_at = time.monotonic()
        self._conn: psycopg.Connection[Any] | None = None
        self._log_conn: PortableConnection | None = None
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracegate-integrator", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Integrate what is queued and sign it (if this replica integrates), then let go."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        self._disconnect()  # (a turn taken by hand, with no thread, holds a connection too)

    def _run(self) -> None:
        self.turn()
        while not self._stop.wait(self.every):
            self.turn()
        self.turn(final=True)
        self._disconnect()

    def turn(self, final: bool = False) -> None:
        """One round: try to lead, measure the lag, integrate if leading."""
        try:
            conn = self._connect()
            if not self.leader:
                found = conn.execute("SELECT pg_try_advisory_lock(%s)", (INTEGRATOR_LOCK,))
                self.leader = bool(found.fetchone()[0])
                if self.leader:
                    logger.info("tracegate: this replica now integrates the shared audit log")
                    # What the last integrator left unsigned is signed when next due.
                    self._since_checkpoint = max(self._since_checkpoint, 1)
            if self.leader:
                self._integrate(conn, final)
            self.lag_seconds = self._lag(conn)
        except Exception as exc:
            self.failures += 1
            self.lag_seconds = None
            # Said once per outage (every round would fill the log); a fork, every time.
            if not self._failing or isinstance(exc, LogForked):
                level = logging.CRITICAL if isinstance(exc, LogForked) else logging.ERROR
                logger.log(level, "tracegate: audit log integration failed: %s", exc)
            self._failing = True
            self._disconnect()
            return
        if self._failing:
            logger.info("tracegate: audit log integration works again")
            self._failing = False

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # Its session lock says who integrates: a connection of its own, never pooled.
            self._conn = self.database.dedicated(statement_timeout=5 * self.database.timeout)
            # The log's code (audit.tlog) reads it through the sqlite3-shaped surface.
            self._log_conn = PortableConnection(self._conn, owned=False)
        return self._conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()  # a leader's lock goes with its connection
        self._conn, self.leader = None, False

    def _lag(self, conn: psycopg.Connection[Any]) -> float:
        found = conn.execute(
            f"SELECT EXTRACT(EPOCH FROM clock_timestamp() - MIN(since)) FROM {PENDING_TABLE}"
        ).fetchone()
        return float(found[0]) if found and found[0] is not None else 0.0

    def _due(self, final: bool, unsigned: int) -> bool:
        return (
            final
            or unsigned >= self.checkpoint_rows
            or time.monotonic() - self._checkpoint_at >= self.checkpoint_seconds
        )

    def _integrate(self, conn: psycopg.Connection[Any], final: bool) -> None:
        assert self._log_conn is not None
        log_conn = self._log_conn
        while True:
            signed = None
            with log_conn:  # one transaction, holding the log's lock
                queued = conn.execute(
                    f"SELECT kind, ref FROM {PENDING_TABLE} ORDER BY since, kind, ref LIMIT %s",
                    (BATCH,),
                ).fetchall()
                log = MerkleLog(log_conn)
                if queued:
                    log.append(self._entries(conn, [(k, r) for k, r in queued]))
                    conn.execute(
                        f"DELETE FROM {PENDING_TABLE} WHERE (kind, ref) IN "
                        "(SELECT * FROM unnest(%s::text[], %s::bigint[]))",
                        ([k for k, _ in queued], [r for _, r in queued]),
                    )
                unsigned = self._since_checkpoint + len(queued)
                if self.signer is not None and unsigned and self._due(final, unsigned):
                    signed = log.sign(self.signer)
            self.integrated += len(queued)
            self._since_checkpoint += len(queued)
            if signed is not None:
                self._since_checkpoint, self._checkpoint_at = 0, time.monotonic()
                if self.publish is not None:
                    self.publish(signed)
            if len(queued) < BATCH:
                return

    def _entries(
        self, conn: psycopg.Connection[Any], queued: list[tuple[str, int]]
    ) -> list[tuple[str, int, bytes]]:
        """(kind, ref, entry bytes) for each queued row, in queue order. A row that vanished
        after its commit still takes its place, with an empty entry: `audit verify` then
        names it (its row is missing), instead of the log quietly closing over the gap."""
        rows: dict[tuple[str, int], Any] = {}
        for kind, table in TABLES.items():
            refs = [r for k, r in queued if k == kind]
            if refs:
                for row in conn.execute(f"SELECT * FROM {table} WHERE id = ANY(%s)", (refs,)):
                    rows[(kind, row["id"])] = row
        entries = []
        for kind, ref in queued:
            row = rows.get((kind, ref))
            if row is None:
                logger.critical(
                    "tracegate: audit %s %d was committed but its row is gone; it enters the "
                    "log as missing (`tracegate audit verify` reports it)",
                    kind,
                    ref,
                )
                entries.append((kind, ref, b""))
            else:
                entries.append((kind, ref, row_entry(kind, dict(row))))
        return entries
