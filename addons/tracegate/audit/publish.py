"""Checkpoints leave the box: an append-only file, C2SP witnesses, an S3 Object Lock bucket.

Whoever controls the audit database can cut off its newest entries; a copy of each checkpoint
in a place that admin cannot rewrite is what catches it (`tracegate audit verify --witness`).
Publishing runs on its own thread, so a slow or absent sink never holds up an audit write; a
failed publish is logged and counted, and the next checkpoint carries everything since (a
witness gets a consistency proof from the size it last cosigned).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from tracegate.audit import merkle
from tracegate.audit.note import Note, Verifier
from tracegate.audit.tlog import MerkleLog, SignedCheckpoint
from tracegate.audit.witness import add_checkpoint_body

if TYPE_CHECKING:
    from tracegate.config import PublishTarget

logger = logging.getLogger(__name__)
CHECKPOINTS_FILE = "checkpoints"
_STOP = object()


class PublishError(RuntimeError):
    pass


class DirectorySink:
    """Appends each checkpoint note to `<directory>/checkpoints` (notes apart by a blank
    line), fsynced: mount it from another host or ship it off as it grows."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / CHECKPOINTS_FILE
        self.name = f"directory {directory}"

    def publish(self, checkpoint: SignedCheckpoint, log: MerkleLog) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (checkpoint.note + "\n\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return ""


@dataclass
class WitnessSink:
    """POST add-checkpoint to a tlog-witness; keeps the size it last cosigned (asks with 0
    first, then with the size a 409 names) and returns its verified cosignature lines."""

    url: str
    key: Verifier
    timeout: float = 10.0
    size: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"witness {self.key.name}"

    def publish(self, checkpoint: SignedCheckpoint, log: MerkleLog) -> str:
        for _ in range(2):
            old = self.size if self.size <= checkpoint.size else 0
            proof = merkle.consistency_proof(old, checkpoint.size, log.subtree) if old else []
            answer = httpx.post(
                self.url.rstrip("/") + "/add-checkpoint",
                content=add_checkpoint_body(old, proof, checkpoint.note).encode(),
                timeout=self.timeout,
            )
            if answer.status_code == 409 and answer.text.strip().isdigit():
                self.size = int(answer.text.strip())
                if self.size > checkpoint.size:
                    raise PublishError(
                        f"{self.name} cosigned {self.size} entries, more than this log's "
                        f"{checkpoint.size}: the log was cut short"
                    )
                continue
            if answer.status_code != 200:
                raise PublishError(f"{self.name}: {answer.status_code} {answer.text.strip()}")
            lines = answer.text
            note = Note.parse(checkpoint.note + lines)
            if not note.verified_by(self.key):
                raise PublishError(f"{self.name}: its answer is not a cosignature by its key")
            self.size = checkpoint.size
            return "".join(s.line for s in note.signatures if s.name == self.key.name)
        raise PublishError(f"{self.name}: the witness keeps answering 409")


@dataclass
class ObjectLockSink:
    """PutObject of each checkpoint under `<prefix><size>` in a bucket with S3 Object Lock,
    retained in COMPLIANCE mode (no one, root included, can delete or shorten it)."""

    client: object  # a botocore S3 client
    bucket: str
    prefix: str
    retain_days: int
    name: str = "object lock"

    def publish(self, checkpoint: SignedCheckpoint, log: MerkleLog) -> str:
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retain_days)
        self.client.put_object(  # type: ignore[attr-defined]
            Bucket=self.bucket,
            Key=f"{self.prefix}{checkpoint.size:020d}",
            Body=checkpoint.note.encode(),
            ContentType="text/plain; charset=utf-8",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=until,
            ChecksumAlgorithm="SHA256",
        )
        return ""


Sink = DirectorySink | WitnessSink | ObjectLockSink


class Publisher:
    """Hands each signed checkpoint to every sink, in order, on a thread of its own."""

    def __init__(self, database: Path | Callable[[], Any], sinks: list[Sink]) -> None:
        """`database`: the audit file, or how to open the shared log (state.portable)."""
        self.database = database
        self.sinks = sinks
        self.failures = 0
        self.published = 0
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.on_failure: Callable[[str], None] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tracegate-publish", daemon=True)
        self._thread.start()

    def __call__(self, checkpoint: SignedCheckpoint) -> None:
        self._queue.put(checkpoint)

    def close(self, timeout: float = 10) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=timeout)
            self._thread = None

    def flush(self, timeout: float = 10) -> None:
        """Wait until what was handed over so far is published (tests, shutdown)."""
        done = threading.Event()
        self._queue.put(done)
        done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            assert isinstance(item, SignedCheckpoint)
            self.publish_now(item)

    def publish_now(self, checkpoint: SignedCheckpoint) -> None:
        if callable(self.database):
            conn = self.database()
        else:
            conn = sqlite3.connect(self.database, timeout=10, isolation_level=None)
        try:
            log = MerkleLog(conn)
            for sink in self.sinks:
                try:
                    lines = sink.publish(checkpoint, log)
                    if lines:
                        with conn:
                            log.add_cosignatures(checkpoint.size, lines)
                    self.published += 1
                except Exception as exc:  # one sink down must not stop the others
                    self.failures += 1
                    logger.error(
                        "tracegate: checkpoint %d not published to %s: %s",
                        checkpoint.size,
                        sink.name,
                        exc,
                    )
                    if self.on_failure is not None:
                        self.on_failure(sink.name)
        finally:
            conn.close()


def build_sinks(targets: list[PublishTarget]) -> list[Sink]:
    """The sinks a config names; credentials are read now, so a missing one stops start-up."""
    sinks: list[Sink] = []
    for target in targets:
        if target.directory is not None:
            sinks.append(DirectorySink(target.directory))
        elif target.witness is not None:
            sinks.append(WitnessSink(target.witness.url, Verifier.parse(target.witness.key)))
        elif target.object_lock is not None:
            import botocore.session

            from tracegate.stores.credentials import load_credentials

            lock = target.object_lock
            credentials = load_credentials(lock.credentials)
            client = botocore.session.get_session().create_client(
                "s3",
                region_name=lock.region,
                endpoint_url=lock.endpoint,
                aws_access_key_id=credentials.access_key,
                aws_secret_access_key=credentials.secret_key,
                aws_session_token=credentials.token,
            )
            sinks.append(ObjectLockSink(client, lock.bucket, lock.prefix, lock.retain_days))
    return sinks
