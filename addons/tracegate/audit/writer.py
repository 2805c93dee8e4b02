"""The SQLite audit writer in a process of its own.

A writer thread shares the gateway's GIL: every SQLite call it makes releases the GIL and
takes it back, and under load each of those waits for the event loop (about 45 futex calls
per flow, measured with `strace -c -f`), so the thread cost the loop more than its own work.
Here the writer's own step (`AuditLog.commit_rows`: one transaction per batch, the Merkle log,
checkpoints) runs in a child process: the event loop pickles each record onto a pipe and reads
back, on the same pipe, one answer per batch once its rows committed. Flows still await the
commit; signed checkpoints come back over the pipe to the gateway's publisher.

The child ends when the pipe closes (the gateway stopped, or was killed), after committing
what it was sent; if the child dies, every waiting flow and every later one is denied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tracegate.audit.keys import SigningKey
from tracegate.audit.log import AuditLog, AuditRecord, AuditWriteError, rows_of
from tracegate.audit.tlog import SignedCheckpoint

logger = logging.getLogger(__name__)

START_SECONDS = 60.0  # the child imports and opens the file; a slow CI machine takes seconds
STOP_SECONDS = 10.0
PROTOCOL = pickle.HIGHEST_PROTOCOL


class ProcessAuditLog(AuditLog):
    """An `AuditLog` whose writer is a child process (`audit.writer: process`)."""

    def __init__(
        self,
        path: str | Path,
        batch_max_rows: int = 256,
        batch_max_wait_ms: int = 0,
        busy_timeout_ms: int = 5000,
        *,
        signing_key: SigningKey | None = None,
        publish: Callable[[SignedCheckpoint], None] | None = None,
        in_flight: Callable[[], int] | None = None,
        **settings: Any,
    ) -> None:
        """`settings`: the rest of `AuditLog`'s arguments (checkpoints, origin, group commit),
        handed to the child's log as they are."""
        super().__init__(path, batch_max_rows, busy_timeout_ms=busy_timeout_ms)
        self._publish_to = publish
        self._count_in_flight = in_flight
        # What the child builds its own AuditLog from (a key crosses as its raw bytes).
        raw = NoEncryption()
        self._settings = {
            "path": str(path),
            "batch_max_rows": batch_max_rows,
            "batch_max_wait_ms": batch_max_wait_ms,
            "busy_timeout_ms": busy_timeout_ms,
            "key": signing_key.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, raw)
            if signing_key
            else None,
            "publish": publish is not None,
            "rest": settings,
        }
        self._process: Any = None
        self._pipe: Any = None
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._numbers = itertools.count()
        self._listening: asyncio.AbstractEventLoop | None = None
        self._gone: str | None = None

    def open(self) -> None:
        """Create the schema here (an unwritable path fails start-up), then start the child
        and wait until it has opened the file too."""
        db = self.connect()
        db.conn.close()
        # A new interpreter that imports only the audit modules (never a fork of a process
        # with threads; not multiprocessing's spawn either, which imports the gateway's own
        # entry point again), on one end of a socket pair.
        ours, theirs = socket.socketpair()
        here = str(Path(__file__).resolve().parents[2])  # the directory holding `tracegate`
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        self._process = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": path},
        )
        theirs.close()
        self._pipe = Connection(ours.detach())
        self._pipe.send(self._settings)
        if not self._pipe.poll(START_SECONDS):
            self._stop_child()
            raise AuditWriteError(f"audit writer did not start within {START_SECONDS:.0f} s")
        try:
            answer = self._pipe.recv()
        except (EOFError, OSError):
            answer = ("error", "the audit writer exited at start")
        if answer != ("ready",):
            self._stop_child()
            raise AuditWriteError(f"audit writer could not start: {answer[1]}")

    @property
    def running(self) -> bool:
        return self._gone is None and self._process is not None and self._process.poll() is None

    async def record(self, record: AuditRecord) -> None:
        if not self.running:
            raise AuditWriteError(f"audit writer is not running{self._why()}")
        loop = asyncio.get_running_loop()
        if self._listening is not loop:
            if self._listening is not None and not self._listening.is_closed():
                self._listening.remove_reader(self._pipe.fileno())
            loop.add_reader(self._pipe.fileno(), self._read)
            self._listening = loop
        number = next(self._numbers)
        future = loop.create_future()
        self._waiting[number] = future
        in_flight = self._count_in_flight() if self._count_in_flight else 0
        try:
            # pickle.dumps: Connection.send's ForkingPickler is twice as slow per record.
            self._pipe.send_bytes(pickle.dumps((number, record, in_flight), PROTOCOL))
        except Exception as exc:  # unpicklable, or the pipe broke: this flow is denied
            del self._waiting[number]
            raise AuditWriteError(f"audit record not sent to the writer: {exc}") from None
        await future

    def _why(self) -> str:
        return f" ({self._gone})" if self._gone else ""

    def _read(self) -> None:
        """What the child said: rows committed or refused, or a checkpoint signed. One
        message per call: the loop calls again while more is waiting."""
        try:
            message = self._pipe.recv()
        except (EOFError, OSError):
            self._lost("the audit writer process exited")
            return
        self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        head, body = message
        if head == "checkpoint":
            if self._publish_to is not None:
                self._publish_to(body)
            return
        for number, error in body:  # "written": each number with None (durable) or why not
            future = self._waiting.pop(number, None)
            if error is None:
                self.written += 1
            else:
                self.failures += 1
            if future is None or future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(AuditWriteError(f"audit write failed: {error}"))

    def _lost(self, why: str) -> None:
        """The child is gone: deny every flow waiting on it, and every later one."""
        self._gone = why
        if self._listening is not None and not self._listening.is_closed():
            self._listening.remove_reader(self._pipe.fileno())
        self._listening = None
        waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            if not future.done():
                self.failures += 1
                future.set_exception(AuditWriteError(f"audit write failed: {why}"))
        logger.error("tracegate: %s; flows are denied until the gateway restarts", why)

    def close(self) -> None:
        """Ask the child to finish (it signs a last checkpoint), publish what it sends back."""
        if self._process is None:
            return
        if self._listening is not None and not self._listening.is_closed():
            self._listening.remove_reader(self._pipe.fileno())
        self._listening = None
        with contextlib.suppress(OSError):
            self._pipe.send(None)
        deadline = time.monotonic() + STOP_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                if not self._pipe.poll(left):
                    break
                message = self._pipe.recv()
            except (EOFError, OSError):
                break
            self._handle(message)
        self._stop_child()
        self._gone = self._gone or "the audit log is closed"

    def _stop_child(self) -> None:
        try:
            self._process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            try:
                self._process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._pipe.close()
        self._process = None


# sqlite-utils imports pandas and numpy when it finds them (for DataFrame columns, which the
# writer never inserts): marked absent, the child starts in a third of the time.
CHILD = (
    "import sys; sys.modules.update(pandas=None, numpy=None); "
    "from tracegate.audit.writer import main; main(int(sys.argv[1]))"
)


def main(fd: int) -> None:
    """The child's entry point: the settings come first on the socket, then records."""
    pipe = Connection(fd)
    serve(pipe, pipe.recv())


def serve(pipe: Connection, settings: dict[str, Any]) -> None:
    """The child: batches read off the pipe, each committed by the writer thread's own step
    (`AuditLog.commit_rows`) and answered in one message once durable. One thread, no event
    loop: a batch costs one read wake-up and one answer, not a hand-over per row."""
    raw_key = settings["key"]
    log = AuditLog(
        settings["path"],
        settings["batch_max_rows"],
        settings["batch_max_wait_ms"],
        settings["busy_timeout_ms"],
        signing_key=SigningKey(Ed25519PrivateKey.from_private_bytes(raw_key)) if raw_key else None,
        publish=(lambda signed: _answer(pipe, ("checkpoint", signed)))
        if settings["publish"]
        else None,
        **settings["rest"],
    )
    try:
        db = log.connect()
    except Exception as exc:
        pipe.send(("error", str(exc) or type(exc).__name__))
        return
    # Ctrl-C reaches the whole process group: the gateway then closes this log itself. A
    # SIGTERM ends the wait below (its wake-up byte lands on `stopped`): the batch in hand is
    # committed and answered, and a last checkpoint signed.
    stopped, wake = socket.socketpair()
    wake.setblocking(False)
    signal.set_wakeup_fd(wake.fileno())
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    delay = settings["rest"].get("commit_delay_ms", 0.0) / 1000
    limits = (settings["batch_max_rows"], settings["batch_max_wait_ms"] / 1000, delay)
    # Selectors made once (Connection.poll builds one per call, a cost per row).
    either, records = selectors.DefaultSelector(), selectors.DefaultSelector()
    either.register(pipe, selectors.EVENT_READ)
    either.register(stopped, selectors.EVENT_READ)
    records.register(pipe, selectors.EVENT_READ)
    pipe.send(("ready",))
    ended = False
    while not ended:
        ready = {found.fileobj for found, _ in either.select(log.until_checkpoint())}
        if stopped in ready:
            break
        if not ready:  # a quiet log still gets its checkpoint on time
            db = log.checkpoint_when_idle(db)
            continue
        batch, ended = take(pipe, records, *limits)
        db = commit(log, db, batch, pipe)
    log.finish(db)  # signs a last checkpoint, sent back on the pipe
    pipe.close()


def take(
    pipe: Connection,
    records: selectors.BaseSelector,
    max_rows: int,
    max_wait: float,
    delay: float,
) -> tuple[list[tuple[AuditRecord, int]], bool]:
    """What the gateway has sent (up to `max_rows`, waiting at most `max_wait` s), then, as
    the writer thread's group commit does, up to `delay` s more while the gateway has more
    flows in flight than the batch holds. True with it: the pipe ended (a stop, or the
    gateway is gone)."""
    batch: list[tuple[AuditRecord, int]] = []
    in_flight = 0  # the gateway's count, sent with each record
    started = time.monotonic()
    while len(batch) < max_rows:
        if batch:
            left = started + max_wait - time.monotonic()
            if left <= 0 and delay and in_flight > len(batch):
                left = started + delay - time.monotonic()
            if not records.select(max(left, 0.0)):
                break
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            return batch, True
        if message is None:
            return batch, True
        number, record, in_flight = message
        batch.append((record, number))
    return batch, False


def commit(
    log: AuditLog,
    db: sqlite_utils.Database | None,
    batch: list[tuple[AuditRecord, int]],
    pipe: Connection,
) -> sqlite_utils.Database | None:
    """One transaction for the batch (records with their numbers), one answer for it: each
    number with None (durable) or why not. A record whose row cannot be made fails alone."""
    answers: list[tuple[int, str | None]] = []

    def refuse(item: tuple[AuditRecord, int], exc: Exception) -> None:
        answers.append((item[1], str(exc) or type(exc).__name__))

    made, rows, bodies = rows_of(batch, refuse)
    log.failures += len(batch) - len(made)
    error = None
    if made:
        try:
            db = log.commit_rows(db, rows, bodies)
        except Exception as exc:
            db, error = None, str(exc) or type(exc).__name__
    answers += [(number, error) for _, number in made]
    if answers:
        _answer(pipe, ("written", answers))
    return db


def _answer(pipe: Connection, message: tuple[Any, ...]) -> None:
    with contextlib.suppress(OSError):  # the gateway is gone; no one waits for it
        pipe.send_bytes(pickle.dumps(message, PROTOCOL))
