"""What an auditor checks: the whole log (`verify`), one entry offline (`prove`/`check_proof`),
and retention that keeps every proof valid (`prune`).

`verify` recomputes every leaf from its row and every node from its children, checks each
signed checkpoint against the tree and the consistency proof between each pair of successive
ones, and, given what a witness cosigned, whether the log was cut short or rewritten since.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracegate.audit import merkle
from tracegate.audit.bodies import body_digest
from tracegate.audit.log import BODIES_TABLE, ENTRY_COLUMNS, FLOWS_TABLE, row_entry
from tracegate.audit.note import (
    Checkpoint,
    Note,
    NoteError,
    NoteSigner,
    Verifier,
    open_checkpoint,
)
from tracegate.audit.tlog import (
    MerkleLog,
    SignedCheckpoint,
    immediate,
    node_key,
)

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROBLEMS = 40
# The shared database's queue of rows the integrator has yet to put in the log.
PENDING_TABLE = "audit_pending"


@dataclass
class VerifyResult:
    rows: int
    checkpoints: int
    problems: list[str]
    approval_events: int = 0
    entries: int = 0
    witnessed: str = ""  # what the witness comparison found, when one was given
    pending: int = 0  # shared database: rows committed, not yet integrated into the log

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Walk:
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


# A replica's file (opened here), or an open connection to the shared database.
Source = str | Path | Any


@contextlib.contextmanager
def _opened(source: Source, write: bool = False) -> Iterator[Any]:
    if not isinstance(source, (str, Path)):
        yield source  # the caller's connection: the caller closes it
        return
    if write:
        conn = sqlite3.connect(source, timeout=10, isolation_level=None)
        MerkleLog.create(conn)  # a file from before the checkpoint guard gains its column
    else:
        conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def _one_snapshot(conn: Any) -> Iterator[None]:
    """Every read of a check sees the log at one moment, though a writer goes on appending
    (a gateway writing its file, the integrator the shared log): read apart, the entries and
    the nodes of a growing log would not match."""
    snapshot = getattr(conn, "snapshot", None)
    if snapshot is not None:
        with snapshot():
            yield
    elif conn.in_transaction:
        yield
    else:
        conn.execute("BEGIN")  # a read transaction: SQLite's WAL keeps its snapshot
        try:
            yield
        finally:
            conn.execute("ROLLBACK")


def _tables(conn: sqlite3.Connection) -> set[str]:
    if not isinstance(conn, sqlite3.Connection):  # the shared database (state.portable)
        return conn.table_names()
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def entry_of(
    conn: sqlite3.Connection,
    kind: str,
    ref: int,
    kept: str | None,
    tables: set[str] | None = None,
) -> bytes | None:
    """The bytes entry (kind, ref) commits to, rebuilt from its row; None if the row is gone."""
    if kind == "prune":
        return kept.encode() if kept is not None else None
    if kind not in ENTRY_COLUMNS:
        return None
    table = ENTRY_COLUMNS[kind][0]
    if table not in (tables if tables is not None else _tables(conn)):
        return None
    found = conn.execute(f"SELECT * FROM {table} WHERE id = ?", (ref,)).fetchone()
    return None if found is None else row_entry(kind, dict(found))


def verify(
    source: Source, log_key: Verifier | None = None, witnessed: str | None = None
) -> VerifyResult:
    """Check the log; `witnessed` is the latest checkpoint note a witness (or the directory
    sink) holds for this log, to catch a log shorter than, or different from, what it saw."""
    walk = _Walk()
    with _opened(source) as conn, _one_snapshot(conn):
        log = MerkleLog(conn)
        size = log.size()
        pruned_through = _check_prunes(conn, log, walk)
        leaves = _check_entries(conn, log, size, pruned_through, walk)
        levels = _check_nodes(conn, leaves, walk)
        tree = merkle.SubtreeHashes(lambda level, i: levels[level][i])
        grown = len(leaves)  # the tree that can be recomputed (leaves may have been deleted)
        checkpoints = log.checkpoints()
        _check_checkpoints(log, checkpoints, tree, grown, log_key, walk)
        _check_bodies(conn, walk)
        seen = ""
        if witnessed is not None:
            seen = _check_witnessed(witnessed, tree, grown, log_key, walk)
        rows = conn.execute(f"SELECT COUNT(*) FROM {FLOWS_TABLE}").fetchone()[0]
        events = walk.counts.get("approval_event", 0)
        pending = 0
        if PENDING_TABLE in _tables(conn):
            pending = conn.execute(f"SELECT COUNT(*) FROM {PENDING_TABLE}").fetchone()[0]
        return VerifyResult(rows, len(checkpoints), walk.problems, events, size, seen, pending)


def _check_prunes(conn: sqlite3.Connection, log: MerkleLog, walk: _Walk) -> int:
    """The highest entry a (genuine) prune entry removed the rows of; -1 if none."""
    through = -1
    query = "SELECT idx, entry FROM log_entries WHERE kind = 'prune' ORDER BY idx"
    for idx, kept in conn.execute(query):
        try:
            leaf = log.leaf(idx)
        except LookupError:
            leaf = b""
        if kept is None or merkle.leaf_hash(kept.encode()) != leaf:
            walk.problem(f"entry {idx} (prune): does not match its leaf (edited)")
            continue
        through = max(through, int(json.loads(kept).get("through", -1)))
    return through


def _check_entries(
    conn: sqlite3.Connection, log: MerkleLog, size: int, pruned_through: int, walk: _Walk
) -> list[bytes]:
    leaves = [bytes(h) for (h,) in conn.execute(
        "SELECT hash FROM log_nodes WHERE level = 0 ORDER BY key")]  # fmt: skip
    if len(leaves) != size:
        walk.problem(f"the log has {size} entries but {len(leaves)} leaf hashes")
    expected = 0
    tables = _tables(conn)
    for idx, kind, ref, kept in log.entries():
        if idx != expected:
            walk.problem(f"entry {expected}: missing (entries deleted; next is {idx})")
        expected = idx + 1
        walk.counts[kind] = walk.counts.get(kind, 0) + 1
        if kind == "prune":
            continue
        what = f"entry {idx} ({kind.replace('_', ' ')} {ref})"
        entry = entry_of(conn, kind, ref, kept, tables)
        if entry is None:
            if kind == "flow" and idx <= pruned_through:
                continue  # its payload was pruned; the leaf stays
            walk.problem(f"{what}: its row is missing (deleted)")
        elif idx < len(leaves) and merkle.leaf_hash(entry) != leaves[idx]:
            walk.problem(f"{what}: its row does not match its leaf (edited)")
    queued = PENDING_TABLE in tables
    for kind, (table, _) in ENTRY_COLUMNS.items():
        if table not in tables:
            continue
        not_queued = f"AND id NOT IN (SELECT ref FROM {PENDING_TABLE} WHERE kind = ?) "
        stray = conn.execute(
            f"SELECT id FROM {table} WHERE id NOT IN "
            "(SELECT ref FROM log_entries WHERE kind = ?) "
            f"{not_queued if queued else ''}ORDER BY id LIMIT 5",
            (kind, kind) if queued else (kind,),
        ).fetchall()
        for (ref,) in stray:
            walk.problem(f"{kind.replace('_', ' ')} {ref}: not in the log (inserted)")
    return leaves


def _check_nodes(conn: sqlite3.Connection, leaves: list[bytes], walk: _Walk) -> list[list[bytes]]:
    """Recompute every perfect subtree from the leaves; each stored node must match."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append(
            [merkle.node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        )
    stored_levels: dict[int, dict[int, bytes]] = {}
    for key, level, i, hash_ in conn.execute("SELECT key, level, idx, hash FROM log_nodes"):
        if key != node_key(level, i):
            walk.problem(f"log node {i} at level {level}: stored under the wrong key (moved)")
        if level:
            stored_levels.setdefault(level, {})[i] = bytes(hash_)
    for level in range(1, len(levels)):
        stored = stored_levels.get(level, {})
        if len(stored) != len(levels[level]):
            walk.problem(f"log level {level}: {len(stored)} nodes, {len(levels[level])} expected")
        for i, hash_ in enumerate(levels[level]):
            if stored.get(i) != hash_:
                walk.problem(f"log node {i} at level {level}: does not match its children")
                break
    return levels


def _check_checkpoints(
    log: MerkleLog,
    checkpoints: list[SignedCheckpoint],
    tree: merkle.SubtreeHashes,
    size: int,
    log_key: Verifier | None,
    walk: _Walk,
) -> None:
    previous: Checkpoint | None = None
    for stored in checkpoints:
        where = f"checkpoint of {stored.size} entries"
        try:
            note = Note.parse(stored.note)
            signed = Checkpoint.parse(note.text)
        except NoteError as exc:
            walk.problem(f"{where}: unreadable ({exc})")
            continue
        if (signed.size, signed.root) != (stored.size, stored.root):
            walk.problem(f"{where}: its table row differs from the signed note (edited)")
        if log_key is not None and not (
            note.verified_by(log_key) and signed.origin == log_key.name
        ):
            walk.problem(f"{where}: signature does not verify with {log_key.name}")
        if signed.size > size:
            walk.problem(f"{where}: the log has only {size} (entries after {size} removed)")
            continue
        if tree.root(signed.size) != signed.root:
            walk.problem(f"{where}: the log no longer matches its signed root")
        if previous is not None and previous.size <= signed.size:
            proof = merkle.consistency_proof(previous.size, signed.size, tree)
            try:
                merkle.verify_consistency(
                    previous.size, signed.size, previous.root, signed.root, proof
                )
            except merkle.ProofError as exc:
                walk.problem(f"{where}: not consistent with the checkpoint before it ({exc})")
        previous = signed


def _check_witnessed(
    witnessed: str, tree: merkle.SubtreeHashes, size: int, log_key: Verifier | None, walk: _Walk
) -> str:
    try:
        note = Note.parse(witnessed)
        seen = Checkpoint.parse(note.text)
    except NoteError as exc:
        walk.problem(f"witness: its checkpoint is unreadable ({exc})")
        return "unreadable"
    if log_key is not None and not note.verified_by(log_key):
        walk.problem("witness: the checkpoint it holds is not signed by this log's key")
        return "not this log's"
    if seen.size > size:
        walk.problem(
            f"witness: it cosigned {seen.size} entries but the log has {size}: "
            f"entries {size}..{seen.size - 1} were cut off (truncated)"
        )
        return f"log SHORTER than the witnessed {seen.size}"
    if seen.size and tree.root(seen.size) != seen.root:
        walk.problem(f"witness: the log's first {seen.size} entries differ from what it cosigned")
        return f"log INCONSISTENT with the witnessed {seen.size}"
    return f"consistent with the witnessed checkpoint of {seen.size} entries"


def _check_bodies(conn: sqlite3.Connection, walk: _Walk) -> None:
    """Each kept body must be the one its row committed to (the row is in the log), and each
    row that committed to a body must still have it."""
    if BODIES_TABLE not in _tables(conn):
        kept = conn.execute(
            f"SELECT id FROM {FLOWS_TABLE} WHERE body_sha256 IS NOT NULL LIMIT 1"
        ).fetchone()
        if kept is not None:
            walk.problem("the bodies table is gone, though rows commit to kept bodies (deleted)")
        return
    missing = conn.execute(
        f"SELECT f.id FROM {FLOWS_TABLE} f LEFT JOIN {BODIES_TABLE} b ON b.flow_id = f.flow_id "
        "WHERE f.body_sha256 IS NOT NULL AND b.flow_id IS NULL ORDER BY f.id LIMIT 5"
    ).fetchall()
    for (row_id,) in missing:
        walk.problem(f"row {row_id}: the body it committed to is missing (deleted)")
    query = (
        f"SELECT b.*, f.id AS row_id, f.body_sha256 AS committed FROM {BODIES_TABLE} b "
        f"LEFT JOIN {FLOWS_TABLE} f ON f.flow_id = b.flow_id"
    )
    for record in conn.execute(query):
        body = dict(record)
        if body["row_id"] is None:
            walk.problem(f"body of flow {body['flow_id']}: no row commits to it (inserted)")
        elif body["committed"] is None or body_digest(body) != body["committed"]:
            walk.problem(
                f"row {body['row_id']}: its kept body does not match the digest in the row "
                "(body edited, swapped or inserted)"
            )


# -- retention -------------------------------------------------------------------------


def prune(source: Source, before: str, signer: NoteSigner | None = None) -> tuple[int, int]:
    """Drop the rows (and bodies) of flows older than `before`, keeping their leaves; the
    prune itself enters the log, so every checkpoint and every remaining proof still holds.
    Returns (rows removed, the last entry index they reached); (0, -1) if none."""
    with _opened(source, write=True) as conn, immediate(conn):
        found = conn.execute(
            "SELECT MAX(e.idx) FROM log_entries e JOIN flows f ON e.kind = 'flow' "
            "AND f.id = e.ref WHERE f.ts < ?",
            (before,),
        ).fetchone()[0]
        if found is None:
            return 0, -1  # nothing to drop: the empty transaction commits
        refs = "SELECT ref FROM log_entries WHERE kind = 'flow' AND idx <= ?"
        conn.execute(
            f"DELETE FROM {BODIES_TABLE} WHERE flow_id IN "
            f"(SELECT flow_id FROM flows WHERE id IN ({refs}))",
            (found,),
        )
        deleted = conn.execute(f"DELETE FROM flows WHERE id IN ({refs})", (found,)).rowcount
        record = {
            "kind": "prune",
            "before": before,
            "through": found,
            "rows": deleted,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        entry = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        log = MerkleLog(conn)
        log.append([("prune", 0, entry)])
        if signer is not None:
            log.sign(signer)
    return deleted, found


# -- proofs ------------------------------------------------------------------------------


class ProofUnavailable(LookupError):
    """No proof can be made (unknown flow, or no checkpoint covers its entry yet)."""


@dataclass(frozen=True)
class EntryProof:
    index: int
    entry: bytes
    proof: str  # the c2sp.org/tlog-proof@v1 text


def prove(source: Source, flow_id: str) -> EntryProof:
    """A self-contained proof that the flow's row is in the log, under its latest checkpoint."""
    with _opened(source) as conn:
        found = conn.execute(
            "SELECT e.idx, e.ref FROM flows f JOIN log_entries e ON e.kind = 'flow' "
            "AND e.ref = f.id WHERE f.flow_id = ?",
            (flow_id,),
        ).fetchone()
        if found is None:
            raise ProofUnavailable(f"no flow {flow_id!r} in the log")
        index, ref = found
        log = MerkleLog(conn)
        checkpoint = log.covering(index)
        if checkpoint is None:
            raise ProofUnavailable(
                f"flow {flow_id} (entry {index}) is not covered by a signed checkpoint yet; "
                "wait for the next one or run `tracegate audit checkpoint`"
            )
        entry = entry_of(conn, "flow", ref, None)
        assert entry is not None
        path_hashes = merkle.inclusion_proof(index, checkpoint.size, log.subtree)
        lines = [PROOF_HEADER, f"index {index}"]
        lines += [base64.b64encode(h).decode() for h in path_hashes]
        return EntryProof(index, entry, "\n".join(lines) + "\n\n" + checkpoint.note)


@dataclass(frozen=True)
class ProofCheck:
    index: int
    checkpoint: Checkpoint
    cosigned_by: tuple[str, ...]


def check_proof(
    text: str, entry: bytes, log_key: Verifier, witness_keys: tuple[Verifier, ...] = ()
) -> ProofCheck:
    """Verify a tlog-proof offline: the log's signature, the inclusion of `entry`, and which
    of the given witnesses cosigned. Raises NoteError or merkle.ProofError."""
    header, sep, rest = text.partition("\n")
    if header != PROOF_HEADER or not sep:
        raise NoteError(f"not a {PROOF_HEADER} file")
    head, sep, note_text = rest.partition("\n\n")
    if not sep:
        raise NoteError("the proof has no checkpoint after its hashes")
    lines = head.split("\n")
    if lines and lines[0].startswith("extra "):
        lines = lines[1:]
    if not lines or not lines[0].startswith("index ") or not lines[0][6:].isdigit():
        raise NoteError("the proof has no `index N` line")
    index = int(lines[0][6:])
    try:
        hashes = [base64.b64decode(line, validate=True) for line in lines[1:]]
    except ValueError:
        raise NoteError("a proof hash is not base64") from None
    if any(len(h) != 32 for h in hashes):
        raise NoteError("a proof hash is not 32 bytes")
    checkpoint, note = open_checkpoint(note_text, log_key)
    merkle.verify_inclusion(
        index, checkpoint.size, merkle.leaf_hash(entry), hashes, checkpoint.root
    )
    cosigned = tuple(w.name for w in witness_keys if note.verified_by(w))
    return ProofCheck(index, checkpoint, cosigned)


def checkpoints_in(text: str) -> Iterator[str]:
    """The notes of an append-only checkpoint file (the directory sink), oldest first."""
    for block in text.split("\n\n\n"):
        if block.strip():
            yield block.strip("\n") + "\n"
