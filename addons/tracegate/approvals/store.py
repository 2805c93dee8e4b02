"""Approvals and their grants in SQLite (the audit database), and every event on them.

All reads and writes run on one worker thread that owns the connection, so the proxy's event
loop never waits on disk. A decision is committed before anyone acts on it: the held flow reads
the in-memory copy, which is replaced only after the transaction succeeded. Every event enters
the audit's Merkle log in the same transaction (`audit.tlog`), beside the flow rows.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from tracegate.approvals.model import (
    APPROVED,
    CANCELLED,
    DENIED,
    EXPIRED,
    FINAL,
    PENDING,
    Approval,
    Vote,
)
from tracegate.audit.log import row_entry
from tracegate.audit.tlog import APPROVAL_EVENT_COLUMNS, MerkleLog

APPROVALS_TABLE = "approvals"
EVENTS_TABLE = "approval_events"
EVENT_COLUMNS = APPROVAL_EVENT_COLUMNS
_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}
T = TypeVar("T")
KEEP_DECIDED_SECONDS = 3600.0  # decided approvals stay in memory this long for held flows


class ApprovalError(Exception):
    """An approval action that is refused; `status` is the HTTP status the endpoint answers."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


@dataclass(frozen=True)
class Actor:
    """Someone acting on an approval, as the approval endpoint authenticated them."""

    subject: str
    issuer: str
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    authenticated: bool = True


MITMWEB_OPERATOR = Actor("mitmweb-operator", "mitmweb", authenticated=False)


def may_decide(approval: Approval, actor: Actor) -> bool:
    return bool(
        set(actor.roles) & set(approval.approver_roles)
        or set(actor.groups) & set(approval.approver_groups)
    )


def is_requester(approval: Approval, actor: Actor) -> bool:
    return actor.subject == approval.requester_subject and actor.issuer == approval.requester_issuer


class ApprovalStore:
    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._busy = busy_timeout_ms / 1000
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tracegate-approvals")
        self._db: sqlite3.Connection | None = None
        self._last_id = 0
        # Approvals this process may be holding a flow for: pending ones and recent decisions.
        self.live: dict[str, Approval] = {}
        # Expired since the last `drain_expired`, for notifications.
        self._expired: list[Approval] = []

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Create the tables and load pending approvals (they survive a restart)."""
        self._executor.submit(self._open).result()

    def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        columns = ", ".join(
            f"{f.name} {_TYPES.get(_base(f.type), 'TEXT')}"
            + (" PRIMARY KEY" if f.name == "id" else "")
            for f in fields(Approval)
        )
        db.execute(f"CREATE TABLE IF NOT EXISTS {APPROVALS_TABLE} ({columns})")
        db.execute(
            f"CREATE INDEX IF NOT EXISTS approvals_grant ON {APPROVALS_TABLE} "
            "(requester_subject, request_key, status)"
        )
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {EVENTS_TABLE} (id INTEGER PRIMARY KEY, ts TEXT, "
            "approval_id TEXT, flow_id TEXT, event TEXT, actor TEXT, how TEXT, detail TEXT)"
        )
        db.execute(f"CREATE INDEX IF NOT EXISTS events_approval ON {EVENTS_TABLE} (approval_id)")
        MerkleLog.create(db)
        (last,) = db.execute(
            f"SELECT MAX(COALESCE((SELECT MAX(id) FROM {EVENTS_TABLE}), 0), COALESCE((SELECT "
            "MAX(ref) FROM log_entries WHERE kind = 'approval_event'), 0))"
        ).fetchone()
        self._last_id = int(last)
        self._db = db
        for found in db.execute(f"SELECT * FROM {APPROVALS_TABLE} WHERE status = ?", (PENDING,)):
            approval = Approval.from_row(dict(found))
            self.live[approval.id] = approval
        self._sweep(time.time())

    # -- what the held flows ask -------------------------------------------------------

    def status(self, approval_id: str) -> str | None:
        approval = self.live.get(approval_id)
        return approval.status if approval else None

    def find_pending(self, subject: str, issuer: str, key: str) -> Approval | None:
        """A pending approval for the same request by the same requester (a retry joins it)."""
        now = time.time()
        for approval in tuple(self.live.values()):  # a snapshot: other threads update it
            if (
                approval.status == PENDING
                and approval.request_key == key
                and approval.requester_subject == subject
                and approval.requester_issuer == issuer
                and approval.pending_until > now
            ):
                return approval
        return None

    async def create(self, approval: Approval) -> Approval:
        return await self._call(self._create, approval)

    async def joined(self, approval: Approval, flow_id: str) -> None:
        await self._call(
            self._event_only,
            approval.id,
            flow_id,
            "joined",
            approval.requester_subject,
            "retry",
            {},
        )

    async def grant_for(self, subject: str, issuer: str, key: str) -> Approval | None:
        return await self._call(self._grant_for, subject, issuer, key, time.time())

    async def grant_used(self, approval: Approval, flow_id: str) -> None:
        await self._call(
            self._event_only,
            approval.id,
            flow_id,
            "grant_used",
            approval.requester_subject,
            "grant",
            {"grant_until": approval.grant_until},
        )

    async def client_released(self, approval_id: str, flow_id: str) -> None:
        """The client's wait ended while the approval is still pending (it stays pending)."""
        await self._call(self._event_only, approval_id, flow_id, "wait_timeout", "", "", {})

    # -- decisions ---------------------------------------------------------------------

    async def decide(
        self, approval_id: str, actor: Actor, approve: bool, how: str, comment: str = ""
    ) -> Approval:
        return await self._call(self._decide, approval_id, actor, approve, how, comment[:500])

    async def close_as(
        self, approval_id: str, status: str, flow_id: str, why: str
    ) -> Approval | None:
        """Cancel (client gone), deny (request edited, mitmweb kill) or expire an approval."""
        return await self._call(self._close_as, approval_id, status, flow_id, why)

    async def refused(self, approval_id: str, actor: Actor, error: ApprovalError) -> None:
        await self._call(
            self._event_only,
            approval_id,
            "",
            "refused",
            actor.subject,
            "endpoint",
            {"code": error.code, "reason": error.reason},
        )

    async def sweep(self) -> list[Approval]:
        """Expire what is due; return everything expired since the last sweep (by any caller)."""

        def sweep_and_drain() -> list[Approval]:
            self._sweep(time.time())
            drained, self._expired = self._expired, []
            return drained

        return await self._call(sweep_and_drain)

    def unreachable_for(self) -> float:
        """Seconds the store has been unable to hear about decisions (0: it can)."""
        return 0.0

    @property
    def pending_count(self) -> int:
        return sum(1 for a in tuple(self.live.values()) if a.status == PENDING)

    # -- reading -----------------------------------------------------------------------

    async def get(self, approval_id: str) -> Approval | None:
        return await self._call(self._get, approval_id)

    async def list(self, status: str | None = PENDING, limit: int = 200) -> list[Approval]:
        return await self._call(self._list, status, limit)

    async def events(self, approval_id: str) -> list[dict[str, Any]]:
        return await self._call(self._events, approval_id)

    # -- worker-thread side ------------------------------------------------------------

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the approval store is not open")
        return self._db

    def _transaction(self, work: Callable[[sqlite3.Connection], None]) -> None:
        db = self._conn
        last = self._last_id
        try:
            db.execute("BEGIN IMMEDIATE")
            work(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._last_id = last
            raise

    def _append_event(
        self,
        db: sqlite3.Connection,
        approval_id: str,
        flow_id: str,
        event: str,
        actor: str,
        how: str,
        detail: dict[str, Any],
    ) -> None:
        self._last_id += 1
        row: dict[str, Any] = {
            "id": self._last_id,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "approval_id": approval_id,
            "flow_id": flow_id,
            "event": event,
            "actor": actor,
            "how": how,
            "detail": json.dumps(detail, sort_keys=True),
        }
        db.execute(
            f"INSERT INTO {EVENTS_TABLE} ({', '.join(EVENT_COLUMNS)}) VALUES "
            f"({', '.join(':' + c for c in EVENT_COLUMNS)})",
            row,
        )
        entry = row_entry("approval_event", row)
        MerkleLog(db).append([("approval_event", row["id"], entry)])

    def _save(self, db: sqlite3.Connection, approval: Approval) -> None:
        row = approval.to_row()
        names = ", ".join(row)
        db.execute(
            f"INSERT OR REPLACE INTO {APPROVALS_TABLE} ({names}) VALUES "
            f"({', '.join(':' + c for c in row)})",
            row,
        )

    def _create(self, approval: Approval) -> Approval:
        def work(db: sqlite3.Connection) -> None:
            self._save(db, approval)
            self._append_event(
                db,
                approval.id,
                approval.flow_id,
                "requested",
                approval.requester_subject,
                approval.phase,
                {
                    "rule": approval.rule_id,
                    "why": approval.why,
                    "reason": approval.reason,
                    "resource": approval.resource,
                    "purpose": approval.purpose,
                },
            )

        self._transaction(work)
        self.live[approval.id] = approval
        return approval

    def _event_only(
        self, approval_id: str, flow_id: str, event: str, actor: str, how: str, detail: dict
    ) -> None:
        self._transaction(
            lambda db: self._append_event(db, approval_id, flow_id, event, actor, how, detail)
        )

    def _load(self, approval_id: str) -> Approval | None:
        row = self._conn.execute(
            f"SELECT * FROM {APPROVALS_TABLE} WHERE id = ?", (approval_id,)
        ).fetchone()
        return Approval.from_row(dict(row)) if row else None

    def _get(self, approval_id: str) -> Approval | None:
        self._sweep(time.time())
        return self._load(approval_id)

    def _list(self, status: str | None, limit: int) -> list[Approval]:
        self._sweep(time.time())
        if status:
            rows = self._conn.execute(
                f"SELECT * FROM {APPROVALS_TABLE} WHERE status = ? ORDER BY created_at DESC "
                "LIMIT ?",
                (status, limit),
            )
        else:
            rows = self._conn.execute(
                f"SELECT * FROM {APPROVALS_TABLE} ORDER BY created_at DESC LIMIT ?", (limit,)
            )
        return [Approval.from_row(dict(r)) for r in rows]

    def _events(self, approval_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            f"SELECT * FROM {EVENTS_TABLE} WHERE approval_id = ? ORDER BY id", (approval_id,)
        )
        return [dict(r) for r in rows]

    def _grant_for(self, subject: str, issuer: str, key: str, now: float) -> Approval | None:
        row = self._conn.execute(
            f"SELECT * FROM {APPROVALS_TABLE} WHERE requester_subject = ? AND "
            "requester_issuer = ? AND request_key = ? AND status = ? AND grant_until > ? "
            "ORDER BY grant_until DESC LIMIT 1",
            (subject, issuer, key, APPROVED, now),
        ).fetchone()
        return Approval.from_row(dict(row)) if row else None

    def _decide(
        self, approval_id: str, actor: Actor, approve: bool, how: str, comment: str
    ) -> Approval:
        self._sweep(time.time())
        approval = self._load(approval_id)
        if approval is None:
            raise ApprovalError(404, "NoSuchApproval", f"no approval {approval_id}")
        own = actor.authenticated and is_requester(approval, actor)
        if own and approve:
            raise ApprovalError(
                403, "SelfApproval", "a requester can never approve their own request"
            )
        if not own and actor.authenticated and not may_decide(approval, actor):
            wanted = ", ".join(
                [f"role {r}" for r in approval.approver_roles]
                + [f"group {g}" for g in approval.approver_groups]
            )
            raise ApprovalError(
                403,
                "NotAnApprover",
                f"{actor.subject!r} may not decide this approval (needs {wanted})",
            )
        if approval.status != PENDING:
            raise ApprovalError(
                409, "ApprovalNotPending", f"approval {approval_id} is already {approval.status}"
            )
        if own:
            approval.status = CANCELLED  # withdrawing one's own request
        now = time.time()
        if approval.status == PENDING and approve:
            if any(v.subject == actor.subject and v.issuer == actor.issuer for v in approval.votes):
                raise ApprovalError(409, "AlreadyApproved", f"{actor.subject!r} already approved")
            approval.votes.append(
                Vote(actor.subject, actor.issuer, how, now, comment, actor.authenticated)
            )
            # An unauthenticated operator (mitmweb) releasing the flow decides it outright.
            if len(approval.votes) >= approval.required or not actor.authenticated:
                approval.status = APPROVED
                approval.grant_until = now + approval.grant_seconds
        elif approval.status == PENDING:
            approval.status = DENIED
        if approval.status in FINAL:
            approval.decided_at = now
            approval.decided_by = actor.subject
            approval.decision_how = how
            approval.decision_comment = comment
        event = approval.status if approval.status in FINAL else "vote"

        def work(db: sqlite3.Connection) -> None:
            self._save(db, approval)
            detail: dict[str, Any] = {"comment": comment, "authenticated": actor.authenticated}
            detail["votes"] = len(approval.votes)
            detail["required"] = approval.required
            if approval.grant_until:
                detail["grant_until"] = approval.grant_until
            self._append_event(db, approval.id, "", event, actor.subject, how, detail)

        self._transaction(work)
        self.live[approval.id] = approval
        return approval

    def _close_as(self, approval_id: str, status: str, flow_id: str, why: str) -> Approval | None:
        approval = self._load(approval_id)
        if approval is None or approval.status in (DENIED, EXPIRED, CANCELLED):
            return approval
        approval.status = status
        approval.decided_at = time.time()
        approval.decision_comment = why
        approval.grant_until = None  # an edited or cancelled request grants nothing

        def work(db: sqlite3.Connection) -> None:
            self._save(db, approval)
            self._append_event(
                db, approval.id, flow_id, status, "tracegate", "gateway", {"why": why}
            )

        self._transaction(work)
        self.live[approval.id] = approval
        return approval

    def _sweep(self, now: float) -> list[Approval]:
        """Expire undecided approvals past their time; forget old decisions from memory."""
        expired = []
        for approval in list(self.live.values()):
            if approval.status == PENDING and approval.pending_until <= now:
                closed = self._close_as(approval.id, EXPIRED, "", "nobody decided in time")
                if closed is not None:
                    expired.append(closed)
                    self._expired.append(closed)
            elif (
                approval.status in FINAL and (approval.decided_at or 0) + KEEP_DECIDED_SECONDS < now
            ):
                del self.live[approval.id]
        return expired


def _base(annotation: Any) -> type:
    text = str(annotation)
    for name, kind in (("float", float), ("int", int)):
        if text.startswith(name):
            return kind
    return str
