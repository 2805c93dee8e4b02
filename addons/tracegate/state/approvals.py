"""Approvals and grants in the shared database: a flow held on one replica is released by a
decision taken on any other, and a grant made anywhere is honoured everywhere.

The decision rules are the approval store's own (`ApprovalStore`); only where the rows live
changes. Every change is committed in PostgreSQL first, with a NOTIFY on the approval's id in
the same transaction; each replica listens on a connection of its own and also re-reads the
pending approvals every `POLL_SECONDS` (a missed notification, a reconnect), so its held flows
see a decision within a second or two. A decision is serialised per approval with a
transaction-level advisory lock, so two approvers on two replicas never lose a vote. Each
replica's own audit trail records the events it caused (rows and Merkle leaves in its SQLite
file, after the shared commit), so `tracegate audit verify` covers them; with the shared log
(`audit.backend: postgres`) they are queued for it in the same transaction instead.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from tracegate.approvals.model import APPROVED, PENDING, Approval
from tracegate.approvals.store import ApprovalStore
from tracegate.state.database import SharedDatabase

logger = logging.getLogger(__name__)
CHANNEL = "tracegate_approvals"
POLL_SECONDS = 1.0


class SharedApprovalStore(ApprovalStore):
    def __init__(
        self,
        path: str | Path,
        database: SharedDatabase,
        busy_timeout_ms: int = 5000,
        instance: str = "",
        shared_audit: bool = False,
    ) -> None:
        super().__init__(path, busy_timeout_ms)
        self.database = database
        self.instance = instance
        # audit.backend postgres: events are queued for the shared log with their row, and
        # this replica keeps no file of its own.
        self.shared_audit = shared_audit
        self._shared: psycopg.Connection | None = None  # the open transaction's connection
        self._local: list[tuple[Any, ...]] = []  # events to record in this replica's trail
        self._touched: set[str] = set()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._unreachable_since: float | None = None  # monotonic, while the listener fails

    # -- lifecycle ---------------------------------------------------------------------

    def _open(self) -> None:
        if not self.shared_audit:
            super()._open()  # this replica's trail: tables and Merkle log in its SQLite file
        self.live.clear()  # what is pending is what the shared database says
        self._refresh()
        self._listener = threading.Thread(
            target=self._listen, name="tracegate-approvals-listen", daemon=True
        )
        self._listener.start()

    def unreachable_for(self) -> float:
        since = self._unreachable_since
        return 0.0 if since is None else time.monotonic() - since

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=5)
        super().close()

    # -- storage primitives (the decision rules are the base class's) -------------------

    def _transaction(self, work: Callable[[Any], None]) -> None:
        with self._shared_transaction() as conn:
            work(conn)

    @contextmanager
    def _shared_transaction(self, lock: str | None = None) -> Iterator[psycopg.Connection]:
        """One transaction in the shared database (nested calls join it), holding `lock`'s
        advisory lock; notifies the approvals it touched; then records this replica's events
        in its own trail."""
        if self._shared is not None:
            yield self._shared
            return
        self._local, self._touched = [], set()
        with self.database.connection() as conn, conn.transaction():
            self._shared = conn
            try:
                if lock is not None:
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (lock,))
                yield conn
                for approval_id in sorted(self._touched):
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, approval_id))
            finally:
                self._shared = None
        events, self._local = self._local, []
        if events:  # committed for every replica: now this replica's own trail
            super()._transaction(
                lambda db: [ApprovalStore._append_event(self, db, *event) for event in events]
            )

    def _append_event(
        self,
        db: Any,
        approval_id: str,
        flow_id: str,
        event: str,
        actor: str,
        how: str,
        detail: dict[str, Any],
    ) -> None:
        row = (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            approval_id,
            flow_id,
            event,
            actor,
            how,
            json.dumps(detail, sort_keys=True),
            self.instance or None,
        )
        insert = (
            "INSERT INTO approval_events (ts, approval_id, flow_id, event, actor, how, detail, "
            "replica) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        )
        if self.shared_audit:  # queued for the shared log in the same transaction
            db.execute(
                f"WITH row AS ({insert} RETURNING id) INSERT INTO audit_pending (kind, ref) "
                "SELECT 'approval_event', id FROM row",
                row,
            )
        else:
            db.execute(insert, row)
            self._local.append((approval_id, flow_id, event, actor, how, detail))
        self._touched.add(approval_id)

    def _save(self, db: Any, approval: Approval) -> None:
        db.execute(
            "INSERT INTO approvals (id, status, requester_subject, requester_issuer, "
            "request_key, created_at, grant_until, row) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, "
            "grant_until = EXCLUDED.grant_until, row = EXCLUDED.row",
            (
                approval.id,
                approval.status,
                approval.requester_subject,
                approval.requester_issuer,
                approval.request_key,
                approval.created_at,
                approval.grant_until,
                json.dumps(approval.to_row()),
            ),
        )
        self._touched.add(approval.id)

    def _load(self, approval_id: str) -> Approval | None:
        with self._reading() as conn:
            found = conn.execute("SELECT row FROM approvals WHERE id = %s", (approval_id,))
            row = found.fetchone()
        return _approval(row[0]) if row else None

    def _list(self, status: str | None, limit: int) -> list[Approval]:
        self._sweep(time.time())
        with self._reading() as conn:
            if status:
                rows = conn.execute(
                    "SELECT row FROM approvals WHERE status = %s ORDER BY created_at DESC LIMIT %s",
                    (status, limit),
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT row FROM approvals ORDER BY created_at DESC LIMIT %s", (limit,)
                ).fetchall()
        return [_approval(r[0]) for r in rows]

    def _events(self, approval_id: str) -> list[dict[str, Any]]:
        with self._reading() as conn:
            cursor = conn.execute(
                "SELECT id, ts, approval_id, flow_id, event, actor, how, detail "
                "FROM approval_events WHERE approval_id = %s ORDER BY id",
                (approval_id,),
            )
            names = [c.name for c in cursor.description or ()]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

    def _grant_for(self, subject: str, issuer: str, key: str, now: float) -> Approval | None:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT row FROM approvals WHERE requester_subject = %s AND "
                "requester_issuer = %s AND request_key = %s AND status = %s AND "
                "grant_until > %s ORDER BY grant_until DESC LIMIT 1",
                (subject, issuer, key, APPROVED, now),
            ).fetchone()
        return _approval(row[0]) if row else None

    def _decide(
        self, approval_id: str, actor: Any, approve: bool, how: str, comment: str
    ) -> Approval:
        # Read, decide and write under the approval's lock: no vote is lost to a race.
        with self._shared_transaction(lock=approval_id):
            return super()._decide(approval_id, actor, approve, how, comment)

    def _close_as(self, approval_id: str, status: str, flow_id: str, why: str) -> Approval | None:
        with self._shared_transaction(lock=approval_id):
            return super()._close_as(approval_id, status, flow_id, why)

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection]:
        if self._shared is not None:
            yield self._shared
        else:
            with self.database.connection() as conn:
                yield conn

    # -- what other replicas did ---------------------------------------------------------

    def _refresh(self) -> None:
        """Pending approvals, and what became of the ones this replica holds flows for."""
        watched = [a.id for a in self.live.values() if a.status == PENDING]
        with self.database.connection() as conn:
            rows = conn.execute(
                "SELECT row FROM approvals WHERE status = %s OR id = ANY(%s)",
                (PENDING, watched),
            ).fetchall()
        for (row,) in rows:
            approval = _approval(row)
            self.live[approval.id] = approval

    def _listen(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                with self.database.dedicated() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        # What changed (or, after a reconnect, all that is pending), read
                        # on the store's own thread like every other change to `live`.
                        self._executor.submit(self._refresh).result(timeout=30)
                        self._unreachable_since = None
                        if failing:
                            logger.warning("tracegate: approvals listener: reconnected")
                            failing = False
                        for _ in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                            pass
            except Exception as exc:  # the database went away: retry until the store closes
                if self._stop.is_set():
                    return
                if self._unreachable_since is None:
                    self._unreachable_since = time.monotonic()
                if not failing:
                    logger.warning("tracegate: approvals listener: %s; reconnecting", exc)
                    failing = True
                self._stop.wait(POLL_SECONDS)


def _approval(row: str) -> Approval:
    return Approval.from_row(json.loads(row))
