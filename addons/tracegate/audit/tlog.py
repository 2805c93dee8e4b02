"""The audit log as an RFC 9162 Merkle tree inside the audit database.

One log for every kind of entry (flow rows, approval events, prunes), so one checkpoint covers
all of it and an auditor checks one thing. An entry is the canonical JSON of its row with its
`kind`; its leaf index is its place in the order writers committed. The hash of every perfect
subtree is stored (`log_nodes`: two rows per entry on average), so appending reads only the
right edge and a proof reads O(log² n) hashes, never every leaf. A node's key is the index of
the last leaf it covers, times 64, plus its level: the nodes an append completes are all
keyed after every earlier one, so the table only ever grows at its end (one page or two per
commit, as for the rows themselves). Writers append inside their
own transaction (BEGIN IMMEDIATE serialises them, across threads and processes alike).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tracegate.audit import merkle
from tracegate.audit.note import Checkpoint, NoteSigner, sign_note

NODES_TABLE = "log_nodes"
ENTRIES_TABLE = "log_entries"
CHECKPOINTS_TABLE = "log_checkpoints"
SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS {NODES_TABLE} (key INTEGER PRIMARY KEY, level INTEGER NOT NULL, "
    "idx INTEGER NOT NULL, hash BLOB NOT NULL)",
    # kind and ref name the row an entry is made of: ('flow', flows.id), ('approval_event',
    # approval_events.id), ('prune', 0: the entry's JSON is kept here, in `entry`).
    f"CREATE TABLE IF NOT EXISTS {ENTRIES_TABLE} (idx INTEGER PRIMARY KEY, kind TEXT NOT NULL, "
    "ref INTEGER NOT NULL, entry TEXT)",
    f"CREATE INDEX IF NOT EXISTS log_entries_ref ON {ENTRIES_TABLE} (kind, ref)",
    f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS_TABLE} (size INTEGER PRIMARY KEY, "
    "root BLOB NOT NULL, note TEXT NOT NULL, ts TEXT NOT NULL, prev_size INTEGER)",
)
# Each checkpoint names the size of the one it extends, and no two may name the same: two
# signers that both read the same latest checkpoint cannot both commit theirs (a compare-and-
# swap on the latest checkpoint, so a log can never fork, whoever signs).
CHECKPOINT_GUARD = (
    f"CREATE UNIQUE INDEX IF NOT EXISTS log_checkpoints_prev ON {CHECKPOINTS_TABLE} (prev_size)"
)
# What an approval event entry is made of (the approval store writes those rows).
APPROVAL_EVENT_COLUMNS = (
    "id",
    "ts",
    "approval_id",
    "flow_id",
    "event",
    "actor",
    "how",
    "detail",
)


def node_key(level: int, index: int) -> int:
    """Where node (level, index) sits in `log_nodes`: after every node completed before it."""
    return ((((index + 1) << level) - 1) << 6) | level


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, its lock taken at once: committed, or rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class LogForked(RuntimeError):
    """The stored tree no longer extends the last signed checkpoint: nothing is signed."""


def entry_bytes(
    kind: str, row: Mapping[str, Any], columns: Iterable[str], optional: Iterable[str] = ()
) -> bytes:
    """The exact bytes a leaf commits to: the row's columns and its kind, canonical JSON; an
    `optional` column only when it is set."""
    skip = {name for name in optional if row.get(name) is None}
    body = {name: row.get(name) for name in columns if name not in skip}
    body["kind"] = kind
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str  # the signed note, with any cosignatures gathered since
    ts: str


class MerkleLog:
    """The tree in one SQLite connection; callers own the transaction around `append`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.subtree = merkle.SubtreeHashes(self._perfect)

    @staticmethod
    def create(conn: sqlite3.Connection) -> None:
        for statement in SCHEMA:
            conn.execute(statement)
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({CHECKPOINTS_TABLE})")}
        if "prev_size" not in columns:  # a file from before the guard: its old rows stay null
            conn.execute(f"ALTER TABLE {CHECKPOINTS_TABLE} ADD COLUMN prev_size INTEGER")
        conn.execute(CHECKPOINT_GUARD)

    def size(self) -> int:
        query = f"SELECT COALESCE(MAX(idx) + 1, 0) FROM {ENTRIES_TABLE}"
        return int(self.conn.execute(query).fetchone()[0])

    def _perfect(self, level: int, index: int) -> bytes:
        found = self.conn.execute(
            f"SELECT hash FROM {NODES_TABLE} WHERE key = ?", (node_key(level, index),)
        ).fetchone()
        if found is None:
            raise LookupError(f"the log has no node at level {level}, index {index}")
        return bytes(found[0])

    def append(self, entries: Sequence[tuple[str, int, bytes]]) -> list[int]:
        """Add (kind, ref, entry bytes) leaves; returns their indices. Inside a transaction."""
        start = self.size()
        nodes: list[tuple[int, int, bytes]] = []
        pending: dict[tuple[int, int], bytes] = {}
        rows = []
        for offset, (kind, ref, entry) in enumerate(entries):
            index = start + offset
            kept = entry.decode() if kind == "prune" else None
            rows.append((index, kind, ref, kept))
            hash_, level, i = merkle.leaf_hash(entry), 0, index
            pending[(0, i)] = hash_
            nodes.append((0, i, hash_))
            while i & 1:  # a right child completes its parent
                left = pending.get((level, i - 1)) or self._perfect(level, i - 1)
                hash_ = merkle.node_hash(left, hash_)
                level, i = level + 1, i >> 1
                pending[(level, i)] = hash_
                nodes.append((level, i, hash_))
        self.conn.executemany(
            f"INSERT INTO {ENTRIES_TABLE} (idx, kind, ref, entry) VALUES (?, ?, ?, ?)", rows
        )
        self.conn.executemany(
            f"INSERT INTO {NODES_TABLE} (key, level, idx, hash) VALUES (?, ?, ?, ?)",
            [(node_key(level, i), level, i, h) for level, i, h in nodes],
        )
        return [start + i for i in range(len(entries))]

    def root(self, size: int | None = None) -> bytes:
        return self.subtree.root(self.size() if size is None else size)

    def index_of(self, kind: str, ref: int) -> int | None:
        found = self.conn.execute(
            f"SELECT idx FROM {ENTRIES_TABLE} WHERE kind = ? AND ref = ?", (kind, ref)
        ).fetchone()
        return None if found is None else int(found[0])

    def entries(self) -> Iterator[tuple[int, str, int, str | None]]:
        yield from self.conn.execute(
            f"SELECT idx, kind, ref, entry FROM {ENTRIES_TABLE} ORDER BY idx"
        )

    def leaf(self, index: int) -> bytes:
        return self._perfect(0, index)

    # -- checkpoints -----------------------------------------------------------------

    def checkpoints(self) -> list[SignedCheckpoint]:
        rows = self.conn.execute(
            f"SELECT size, root, note, ts FROM {CHECKPOINTS_TABLE} ORDER BY size"
        )
        return [SignedCheckpoint(s, bytes(r), n, t) for s, r, n, t in rows]

    def latest(self) -> SignedCheckpoint | None:
        found = self.conn.execute(
            f"SELECT size, root, note, ts FROM {CHECKPOINTS_TABLE} ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if found is None else SignedCheckpoint(found[0], bytes(found[1]), *found[2:])

    def covering(self, index: int) -> SignedCheckpoint | None:
        """The latest checkpoint whose tree holds entry `index` (the most cosigned, too)."""
        found = self.conn.execute(
            f"SELECT size, root, note, ts FROM {CHECKPOINTS_TABLE} WHERE size > ? "
            "ORDER BY size DESC LIMIT 1",
            (index,),
        ).fetchone()
        return None if found is None else SignedCheckpoint(found[0], bytes(found[1]), *found[2:])

    def sign(self, signer: NoteSigner) -> SignedCheckpoint | None:
        """Sign the current tree, if it grew and extends the last checkpoint (a log must never
        sign a checkpoint inconsistent with one it signed). Inside a transaction."""
        size = self.size()
        last = self.latest()
        if size == 0 or (last is not None and last.size >= size):
            return None
        if last is not None:
            try:
                proof = merkle.consistency_proof(last.size, size, self.subtree)
                merkle.verify_consistency(last.size, size, last.root, self.root(size), proof)
            except (merkle.ProofError, LookupError) as exc:
                raise LogForked(
                    f"the log no longer extends its checkpoint of {last.size} entries ({exc}); "
                    "refusing to sign: run `tracegate audit verify`"
                ) from None
        root = self.root(size)
        note = sign_note(Checkpoint(signer.name, size, root).text(), signer)
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.conn.execute(
            f"INSERT INTO {CHECKPOINTS_TABLE} (size, root, note, ts, prev_size) "
            "VALUES (?, ?, ?, ?, ?)",
            (size, root, note, ts, last.size if last is not None else 0),
        )
        return SignedCheckpoint(size, root, note, ts)

    def add_cosignatures(self, size: int, lines: str) -> None:
        """Keep a witness's cosignature lines with the checkpoint they sign."""
        self.conn.execute(
            f"UPDATE {CHECKPOINTS_TABLE} SET note = note || ? WHERE size = ?", (lines, size)
        )
