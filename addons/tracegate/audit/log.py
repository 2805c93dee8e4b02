"""SQLite audit rows, written by one thread in batched transactions.

Flows await `record()`, which resolves only once the row's transaction has committed, so a
response is never released unrecorded and the event loop never waits on disk I/O. Each row
enters the Merkle log (`audit.tlog`) in the same transaction; checkpoints of the log are signed
every N rows or M seconds and handed to the publishers (off-box sinks, witnesses).
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import sqlite_utils

from tracegate.audit.bodies import body_digest, seal
from tracegate.audit.keys import SigningKey
from tracegate.audit.tlog import (
    APPROVAL_EVENT_COLUMNS,
    LogForked,
    MerkleLog,
    SignedCheckpoint,
    entry_bytes,
    immediate,
)

logger = logging.getLogger(__name__)

FLOWS_TABLE = "flows"
COLUMNS: dict[str, type] = {
    "id": int,
    "ts": str,
    "flow_id": str,
    "session_id": str,
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
    "approval": str,  # JSON: the approval that held this flow, or the grant it used
    "body_sha256": str,  # digest of its `bodies` record (audit.bodies.body_digest), or null
    # How the identity came: "oidc", "saml", or "sts ASIA..." (the access key id, never a secret)
    "identity": str,
    "code": str,  # a denial's code (e.g. OutOfScope), as the client got it; null when allowed
}
# Columns added since the first release: an older file gains them (null in its old rows).
ADDED_COLUMNS = ("identity", "code")
# Columns added since the Merkle log's release: a leaf covers one only when it is set, so the
# rows written before it existed keep the leaves they were given.
LEAF_OPTIONAL = ("code",)
POLICIES_TABLE = "policies"
BODIES_TABLE = "bodies"
BODY_COLUMNS: dict[str, type] = {
    "flow_id": str,
    "request": str,  # JSON: method, scheme, host, port, path, query, headers (no credentials)
    "status": int,
    "response_headers": str,  # JSON list of [name, value]
    "response_body": bytes,  # zlib-compressed, up to audit.max_body_bytes before compression
    "truncated": int,
    "ts_start": float,
    "ts_end": float,
}
INSERT_BODY = "INSERT INTO {} ({}) VALUES ({})".format(
    BODIES_TABLE, ", ".join(BODY_COLUMNS), ", ".join(f":{c}" for c in BODY_COLUMNS)
)


# What each kind of entry is made of: its table, and the columns its leaf commits to.
ENTRY_COLUMNS = {
    "flow": (FLOWS_TABLE, tuple(COLUMNS)),
    "approval_event": ("approval_events", APPROVAL_EVENT_COLUMNS),
}
# The replica that wrote the row, a column only the shared database's tables have: its leaf
# covers it, so no row can be passed off as another replica's.
REPLICA_COLUMNS = {"flow": "instance", "approval_event": "replica"}


def row_entry(kind: str, row: Mapping[str, Any]) -> bytes:
    """The bytes a leaf of `kind` commits to, made from its row: one definition for every
    writer (this file's, the approval store's, the shared log's integrator, the migration)
    and for `audit verify`."""
    columns = ENTRY_COLUMNS[kind][1]
    replica = REPLICA_COLUMNS[kind]
    if replica in row:
        columns = (*columns, replica)
    return entry_bytes(kind, row, columns, LEAF_OPTIONAL if kind == "flow" else ())


INSERT_ROW = "INSERT INTO {} ({}) VALUES ({})".format(
    FLOWS_TABLE, ", ".join(COLUMNS), ", ".join(f":{c}" for c in COLUMNS)
)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class AuditSchemaError(RuntimeError):
    """The database holds rows in a layout this version cannot extend safely."""


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
    session_id: str | None = None
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
    approval: dict[str, Any] | None = None
    identity: str | None = None
    code: str | None = None
    # What the requester saw (BODY_COLUMNS), kept in `bodies`; None: digests only.
    body: dict[str, Any] | None = None

    def to_row(self) -> dict[str, Any]:
        # Shallow on purpose: `asdict` would deep-copy the body's bytes only to drop them.
        row = {name: getattr(self, name) for name in ROW_FIELDS}
        row["roles"] = json.dumps(self.roles)
        row["masks"] = json.dumps(self.masks, sort_keys=True)
        row["approval"] = json.dumps(self.approval, sort_keys=True) if self.approval else None
        return row


ROW_FIELDS = tuple(f.name for f in fields(AuditRecord) if f.name != "body")
STOP = object()


class AuditLog:
    """Owns the SQLite file; `record` from any coroutine, `close` once at shutdown."""

    def __init__(
        self,
        path: str | Path,
        batch_max_rows: int = 256,
        batch_max_wait_ms: int = 0,
        busy_timeout_ms: int = 5000,
        signing_key: SigningKey | None = None,
        checkpoint_every_rows: int = 1000,
        checkpoint_every_seconds: float = 60.0,
        origin: str = "tracegate.local/audit",
        publish: Callable[[SignedCheckpoint], None] | None = None,
        commit_delay_ms: float = 0.0,
        in_flight: Callable[[], int] | None = None,
    ) -> None:
        self.path = Path(path)
        # Group commit: `in_flight()` counts the flows that will each record a row; while
        # some of them have not queued theirs, a batch waits up to the delay for them.
        self._commit_delay = commit_delay_ms / 1000
        self._in_flight = in_flight
        self._signer = signing_key.signer(origin) if signing_key else None
        self._publish = publish
        self._checkpoint_rows = checkpoint_every_rows
        self._checkpoint_seconds = checkpoint_every_seconds
        self._last_id = 0
        self._since_checkpoint = 0
        self._checkpoint_at = time.monotonic()
        self._busy_timeout = busy_timeout_ms / 1000
        self._batch_rows = batch_max_rows
        self._batch_wait = batch_max_wait_ms / 1000
        # SimpleQueue: a put from the event loop is one C call that never waits on a lock
        # the writer holds (queue.Queue's Condition made the loop wait for the GIL).
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self.written = 0
        self.commits = 0
        self.checkpoint_failures = 0

    def open(self) -> None:
        """Create the schema synchronously so an unwritable path fails start-up, not a flow."""
        db = self.connect()
        db.conn.close()
        self._thread = threading.Thread(target=self._run, name="tracegate-audit", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def target(self) -> str:
        """Where the rows go: a config naming the same place keeps this log on reload."""
        return f"sqlite:{self.path}"

    def check(self) -> tuple[bool, str]:
        """For readiness: the writer runs and the file takes a write lock now."""
        if not self.running:
            return False, "audit writer is not running"
        try:
            conn = sqlite3.connect(self.path, timeout=0.2, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return False, f"audit database not writable: {exc}"
        return True, f"{self.path} writable"

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(STOP)
            self._thread.join(timeout=10)
            self._thread = None

    async def record(self, record: AuditRecord) -> None:
        if self._thread is None or not self._thread.is_alive():
            raise AuditWriteError("audit writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # The writer thread turns it into a row: the event loop only queues it.
        self._queue.put((record, loop, future))
        await future

    def connect(self, resume: bool = True) -> sqlite_utils.Database:
        """The file, its schema created or checked; `resume`: the writer's own connection,
        which numbers rows on from the last one written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        tables = set(db.table_names())
        if FLOWS_TABLE in tables:
            existing = set(db[FLOWS_TABLE].columns_dict)
            if in_chain_format(db.conn):
                db.conn.close()
                raise AuditSchemaError(
                    f"{self.path}: written in the hash-chain format; run `tracegate audit "
                    f"migrate {self.path}` once (it checks the old chain, then builds the log)"
                )
            missing = set(COLUMNS) - existing - set(ADDED_COLUMNS)
            if missing:
                db.conn.close()
                raise AuditSchemaError(
                    f"{self.path}: written by an older tracegate (no {', '.join(sorted(missing))}"
                    "); move it aside to start a new audit trail"
                )
            for name in ADDED_COLUMNS:
                if name not in existing:
                    db.execute(f"ALTER TABLE {FLOWS_TABLE} ADD COLUMN {name} TEXT")
        if FLOWS_TABLE not in tables:
            db[FLOWS_TABLE].create(COLUMNS, pk="id")
            db[FLOWS_TABLE].create_index(["flow_id"])
            db[FLOWS_TABLE].create_index(["subject", "ts"])
            db[FLOWS_TABLE].create_index(["session_id"])
        if BODIES_TABLE not in tables:
            db[BODIES_TABLE].create(BODY_COLUMNS, pk="flow_id")
        if POLICIES_TABLE not in tables:
            db[POLICIES_TABLE].create({"version": str, "ts": str, "config": str}, pk="version")
        MerkleLog.create(db.conn)
        if resume:  # only the opener and the writer thread number the rows
            self._resume(db.conn)
        return db

    def _resume(self, conn: sqlite3.Connection) -> None:
        """Continue after the last row ever written (pruned rows keep their log entries)."""
        (last,) = conn.execute(
            f"SELECT MAX(COALESCE((SELECT MAX(id) FROM {FLOWS_TABLE}), 0), "
            "COALESCE((SELECT MAX(ref) FROM log_entries WHERE kind = 'flow'), 0))"
        ).fetchone()
        self._last_id = int(last)

    def record_policy(self, version: str, config_json: str) -> None:
        """Store the effective config once per version, so every row's version can be read."""
        db = self.connect(resume=False)
        try:
            with db.conn:
                db.conn.execute(
                    f"INSERT OR IGNORE INTO {POLICIES_TABLE} (version, ts, config) "
                    "VALUES (?, ?, ?)",
                    (version, _now(), config_json),
                )
        finally:
            db.conn.close()

    def _number(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self._last_id += 1
            row["id"] = self._last_id

    def _maybe_checkpoint(self, db: sqlite_utils.Database, written: int) -> None:
        self._since_checkpoint += written
        due = self._since_checkpoint >= self._checkpoint_rows or (
            time.monotonic() - self._checkpoint_at >= self._checkpoint_seconds
        )
        if self._signer is None or not due:
            return
        self.checkpoint(db.conn)

    def checkpoint(self, conn: sqlite3.Connection) -> SignedCheckpoint | None:
        """Sign the log as it stands (if it grew), then hand the checkpoint to the publisher."""
        assert self._signer is not None
        with immediate(conn):
            signed = MerkleLog(conn).sign(self._signer)
        self._since_checkpoint = 0
        self._checkpoint_at = time.monotonic()
        if signed is not None and self._publish is not None:
            self._publish(signed)
        return signed

    def until_checkpoint(self) -> float | None:
        """How long the writer may wait for rows before unsigned ones are due a checkpoint."""
        if self._signer is None or self._since_checkpoint == 0:
            return None
        return max(self._checkpoint_at + self._checkpoint_seconds - time.monotonic(), 0.0)

    def checkpoint_when_idle(self, db: sqlite_utils.Database | None) -> sqlite_utils.Database:
        try:
            db = db or self.connect()
            self.checkpoint(db.conn)
        except Exception as exc:
            self.checkpoint_failures += 1
            self._since_checkpoint, self._checkpoint_at = 0, time.monotonic()
            level = logging.CRITICAL if isinstance(exc, LogForked) else logging.ERROR
            logger.log(level, "tracegate: audit checkpoint failed: %s", exc)
        return db  # type: ignore[return-value]

    def _run(self) -> None:
        db: sqlite_utils.Database | None = None
        while True:
            try:
                first = self._queue.get(timeout=self.until_checkpoint())
            except queue.Empty:  # a quiet log still gets its checkpoint on time
                db = self.checkpoint_when_idle(db)
                continue
            if first is STOP:
                break
            taken = take_batch(
                self._queue,
                first,
                self._batch_rows,
                self._batch_wait,
                self._commit_delay,
                self._in_flight,
            )
            batch, rows, bodies = rows_of(taken)
            self.failures += len(taken) - len(batch)
            if not batch:
                continue
            error: BaseException | None = None
            try:
                db = self.commit_rows(db, rows, bodies)
            except Exception as exc:  # the flows waiting on this batch are denied
                error, db = exc, None
            settle_batch(batch, error)
        self.finish(db)

    def commit_rows(
        self,
        db: sqlite_utils.Database | None,
        rows: list[dict[str, Any]],
        bodies: list[dict[str, Any]],
    ) -> sqlite_utils.Database:
        """Number `rows`, commit them with their bodies and log entries in one transaction,
        then sign a checkpoint if one is due. Raises when nothing of the batch was written.

        The writer's own step, whether the writer is this process's thread or a child."""
        try:
            if db is None:
                db = self.connect()
            # A prepared statement, since sqlite-utils' insert_all re-inspects the schema on
            # every call.
            last = self._last_id
            self._number(rows)
            try:
                with db.conn:
                    db.conn.execute("BEGIN IMMEDIATE")
                    db.conn.executemany(INSERT_ROW, rows)
                    if bodies:
                        db.conn.executemany(INSERT_BODY, bodies)
                    MerkleLog(db.conn).append(
                        [("flow", r["id"], row_entry("flow", r)) for r in rows]
                    )
            except Exception:
                self._last_id = last  # nothing of this batch was written
                raise
        except Exception as exc:
            self.failures += len(rows)
            logger.error("tracegate: audit write failed: %s", exc)
            raise
        self.written += len(rows)
        self.commits += 1
        try:
            self._maybe_checkpoint(db, len(rows))
        except Exception as exc:  # the rows are durable; the next checkpoint covers them
            self.checkpoint_failures += 1
            level = logging.CRITICAL if isinstance(exc, LogForked) else logging.ERROR
            logger.log(level, "tracegate: audit checkpoint failed: %s", exc)
        return db

    def finish(self, db: sqlite_utils.Database | None) -> None:
        """The writer's last step: the last rows get their checkpoint, the file is closed."""
        if db is None:
            return
        if self._signer is not None:
            try:
                self.checkpoint(db.conn)
            except Exception as exc:
                logger.error("tracegate: audit checkpoint at shutdown failed: %s", exc)
        db.conn.close()


def take_batch(
    waiting: queue.SimpleQueue[Any],
    first: Any,
    max_rows: int,
    max_wait: float,
    delay: float = 0.0,
    in_flight: Callable[[], int] | None = None,
) -> list[Any]:
    """`first` and what else is queued (up to `max_rows`, waiting at most `max_wait` s); a
    shutdown request stays queued for the writer's next turn.

    Then, as PostgreSQL's `commit_delay` does, up to `delay` s more while more flows are in
    flight than the batch holds: under load one commit (one fsync) covers several flows, and a
    flow alone never waits."""
    batch = [first]
    started = time.monotonic()
    deadline = started + max_wait
    while len(batch) < max_rows:
        try:
            left = deadline - time.monotonic()
            if left <= 0 and delay and in_flight is not None and in_flight() > len(batch):
                left = started + delay - time.monotonic()
            item = waiting.get(timeout=left) if left > 0 else waiting.get_nowait()
        except queue.Empty:
            break
        if item is STOP:
            waiting.put(STOP)
            break
        batch.append(item)
    return batch


def settle_batch(batch: list[Any], error: BaseException | None) -> None:
    """Resolve every (record, loop, future) of a batch: one wake-up per event loop."""
    waiting: dict[Any, list[asyncio.Future[None]]] = {}
    for _, loop, future in batch:
        waiting.setdefault(loop, []).append(future)
    for loop, futures in waiting.items():
        loop.call_soon_threadsafe(_settle_all, futures, error)


def rows_of(
    batch: list[Any], refuse: Callable[[Any, Exception], None] | None = None
) -> tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The queued flows whose rows could be made, with those rows and their bodies; a flow
    whose row cannot be made is refused at once, alone (by default its future is failed),
    and the rest go on. Each item holds its record first."""
    made, rows, bodies = [], [], []
    for item in batch:
        try:
            row, body = row_of(item[0])
        except Exception as exc:
            logger.error("tracegate: audit row could not be made: %s", exc)
            if refuse is None:
                settle_batch([item], exc)
            else:
                refuse(item, exc)
            continue
        made.append(item)
        rows.append(row)
        if body is not None:
            bodies.append(body)
    return made, rows, bodies


def row_of(record: AuditRecord) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The flow's row and its body record (compressed here, on the writer's thread)."""
    row = record.to_row()
    body = seal(dict(record.body)) if record.body is not None else None
    row["body_sha256"] = body_digest(body) if body is not None else None
    return row, body


def in_chain_format(conn: sqlite3.Connection) -> bool:
    """A file of the hash-chain release: rows with a `prev_hash` column and no Merkle log yet
    (`tracegate audit migrate` brings it in)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if FLOWS_TABLE not in tables:
        return False
    columns = {r[1] for r in conn.execute(f"PRAGMA table_info({FLOWS_TABLE})")}
    if "prev_hash" not in columns:
        return False
    return "log_entries" not in tables or not conn.execute("SELECT 1 FROM log_entries").fetchone()


def _settle_all(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        _settle(future, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(AuditWriteError(f"audit write failed: {error}"))
