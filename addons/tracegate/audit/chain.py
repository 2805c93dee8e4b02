"""Tamper evidence: each audit row commits to the previous one, and checkpoints are signed.

`row_hash = sha256(prev_hash || canonical JSON of the row, id included)`, so an edited row breaks
its own hash, a deleted or inserted row breaks the next row's link, and reordered rows break
both. Checkpoints sign `(row id, row hash, time)` with an Ed25519 key kept outside the database,
so rewriting the whole chain after the last checkpoint is still detectable.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = "0" * 64
HASHED_EXCLUDE = {"row_hash"}


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    body = {k: v for k, v in row.items() if k not in HASHED_EXCLUDE}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(prev_hash.encode() + canonical.encode()).hexdigest()


def checkpoint_message(row_id: int, hash_: str, ts: str) -> bytes:
    return f"tracegate-checkpoint:{row_id}:{hash_}:{ts}".encode()


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)

    @classmethod
    def generate(cls, path: str | Path) -> Path:
        """Write a new private key (mode 600) and its public key beside it (`.pub`)."""
        key = Ed25519PrivateKey.generate()
        path = Path(path)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        public = path.with_name(path.name + ".pub")
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return public

    @property
    def key_id(self) -> str:
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, message: bytes) -> str:
        return self.private.sign(message).hex()


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        private = serialization.load_pem_private_key(data, password=None)
        key = private.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key


@dataclass
class VerifyResult:
    rows: int
    checkpoints: int
    problems: list[str]
    approval_events: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _verify_bodies(conn: sqlite3.Connection, problems: list[str]) -> None:
    """Each kept body must be the one its row committed to (the row is in the chain)."""
    from tracegate.audit.bodies import body_digest

    query = (
        "SELECT b.*, f.id AS row_id, f.body_sha256 AS committed FROM bodies b "
        "LEFT JOIN flows f ON f.flow_id = b.flow_id"
    )
    for record in conn.execute(query):
        body = dict(record)
        if body["row_id"] is None:
            continue  # its row was pruned; nothing in the chain speaks for it
        if body["committed"] is None or body_digest(body) != body["committed"]:
            problems.append(
                f"row {body['row_id']}: its kept body does not match the digest in the row "
                "(body edited, swapped or inserted)"
            )
        if len(problems) >= 40:
            return


def verify(path: str | Path, public_key: Ed25519PublicKey | None = None) -> VerifyResult:
    """Walk the chain from its anchor; report the first break of each kind, with the row id."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    problems: list[str] = []
    try:
        anchor = conn.execute(
            "SELECT row_id, row_hash FROM checkpoints WHERE kind = 'prune' "
            "ORDER BY row_id DESC LIMIT 1"
        ).fetchone()
        prev_id, prev_hash = (anchor["row_id"], anchor["row_hash"]) if anchor else (0, GENESIS)
        computed: dict[int, str] = {prev_id: prev_hash}
        count = 0
        for record in conn.execute("SELECT * FROM flows ORDER BY id"):
            row = dict(record)
            count += 1
            if row["id"] != prev_id + 1:
                problems.append(
                    f"row {row['id']}: expected row {prev_id + 1} next (rows deleted or inserted)"
                )
            if row["prev_hash"] != prev_hash:
                problems.append(f"row {row['id']}: does not link to the row before it")
            expected = row_hash(row["prev_hash"], row)
            if expected != row["row_hash"]:
                problems.append(f"row {row['id']}: content does not match its hash (edited)")
            prev_id, prev_hash = row["id"], row["row_hash"]
            computed[row["id"]] = expected
            if len(problems) >= 20:
                break
        checkpoints = list(conn.execute("SELECT * FROM checkpoints ORDER BY row_id"))
        for checkpoint in checkpoints:
            where = f"checkpoint at row {checkpoint['row_id']}"
            if (
                checkpoint["kind"] != "prune"
                and computed.get(checkpoint["row_id"]) != checkpoint["row_hash"]
            ):
                problems.append(f"{where}: the chain no longer matches the signed hash")
            if public_key is not None:
                message = checkpoint_message(
                    checkpoint["row_id"], checkpoint["row_hash"], checkpoint["ts"]
                )
                try:
                    public_key.verify(bytes.fromhex(checkpoint["signature"]), message)
                except (InvalidSignature, ValueError):
                    problems.append(f"{where}: signature does not verify")
        _verify_bodies(conn, problems)
        events = _verify_approval_events(conn, problems)
        return VerifyResult(count, len(checkpoints), problems, events)
    finally:
        conn.close()


def _verify_approval_events(conn: sqlite3.Connection, problems: list[str]) -> int:
    """The approval events form their own chain from the genesis hash."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'approval_events'"
    ).fetchone()
    if not exists:
        return 0
    prev_id, prev_hash, count = 0, GENESIS, 0
    for record in conn.execute("SELECT * FROM approval_events ORDER BY id"):
        row = dict(record)
        count += 1
        where = f"approval event {row['id']}"
        if row["id"] != prev_id + 1:
            problems.append(f"{where}: expected event {prev_id + 1} next (deleted or inserted)")
        if row["prev_hash"] != prev_hash:
            problems.append(f"{where}: does not link to the event before it")
        if row_hash(row["prev_hash"], row) != row["row_hash"]:
            problems.append(f"{where}: content does not match its hash (edited)")
        prev_id, prev_hash = row["id"], row["row_hash"]
        if len(problems) >= 40:
            break
    return count


def prune(path: str | Path, before: str, key: SigningKey) -> tuple[int, int | None]:
    """Delete rows older than `before` (ISO 8601) and leave a signed anchor at the last one.

    The anchor is a checkpoint of kind 'prune' holding the last deleted row's id and hash: the
    first remaining row links to it, so the rest of the chain still verifies. Periodic
    checkpoints inside the deleted range go too (the anchor supersedes them).
    """
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        last = conn.execute(
            "SELECT id, row_hash FROM flows WHERE ts < ? ORDER BY id DESC LIMIT 1", (before,)
        ).fetchone()
        if last is None:
            conn.execute("ROLLBACK")
            return 0, None
        row_id, hash_ = last
        deleted = conn.execute("DELETE FROM flows WHERE id <= ?", (row_id,)).rowcount
        conn.execute("DELETE FROM checkpoints WHERE row_id <= ?", (row_id,))
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conn.execute(
            "INSERT INTO checkpoints (row_id, row_hash, ts, signature, key_id, kind) "
            "VALUES (?, ?, ?, ?, ?, 'prune')",
            (row_id, hash_, ts, key.sign(checkpoint_message(row_id, hash_, ts)), key.key_id),
        )
        conn.execute("COMMIT")
        return deleted, row_id
    except Exception:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
