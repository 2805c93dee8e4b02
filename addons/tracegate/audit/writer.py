"""The SQLite audit writer in a process of its own.

A writer thread shares the gateway's GIL: every SQLite call it makes releases the GIL and
takes it back, and under load each of those waits for the event loop (about 45 futex calls
per flow, measured with `strace -c -f`), so the thread cost the loop more than its own work.
Here the same `AuditLog`, with its batches, group commit and checkpoints, runs in a child
process: the event loop pickles each record onto a pipe and reads back, on the same pipe,
that its row committed. Flows still await the commit; signed checkpoints come back over the
pipe to the gateway's publisher.

The child ends when the pipe closes (the gateway stopped, or was killed), after committing
what it was sent; if the child dies, every waiting flow and every later one is denied.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from tracegate.audit.keys import SigningKey
from tracegate.audit.log import AuditLog, AuditRecord, AuditWriteError
from tracegate.audit.tlog import SignedCheckpoint

logger = logging.getLogger(__name__)

START_SECONDS = 60.0  # the child imports and opens the file; a slow CI machine takes seconds
STOP_SECONDS = 10.0


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
        db = self._connect()
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
            self._pipe.send((number, record, in_flight))
        except Exception as exc:  # unpicklable, or the pipe broke: this flow is denied
            del self._waiting[number]
            raise AuditWriteError(f"audit record not sent to the writer: {exc}") from None
        await future

    def _why(self) -> str:
        return f" ({self._gone})" if self._gone else ""

    def _read(self) -> None:
        """What the child said: rows committed or refused, checkpoints signed."""
        while True:
            try:
                if not self._pipe.poll():
                    return
                message = self._pipe.recv()
            except (EOFError, OSError):
                self._lost("the audit writer process exited")
                return
            self._handle(message)

    def _handle(self, message: tuple[Any, ...]) -> None:
        head = message[0]
        if head == "checkpoint":
            if self._publish_to is not None:
                self._publish_to(message[1])
            return
        if head == "error":  # a log line of the child's, about no one flow
            logger.error("tracegate: audit writer: %s", message[1])
            return
        future = self._waiting.pop(head, None)
        error = message[1]
        if error is None:
            self.written += 1
        else:
            self.failures += 1
        if future is None or future.done():
            return
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


def serve(pipe: Any, settings: dict[str, Any]) -> None:
    """The child: an AuditLog fed from the pipe, each row answered once it committed."""
    loop = asyncio.new_event_loop()
    in_flight = [0]  # the gateway's count, sent with each record

    def send(message: tuple[Any, ...]) -> None:
        # The loop answers rows; the writer thread hands over checkpoints: call_soon_threadsafe
        # keeps every send on the loop's thread, so messages never interleave on the pipe.
        loop.call_soon_threadsafe(_send, message)

    def _send(message: tuple[Any, ...]) -> None:
        with contextlib.suppress(OSError):  # the gateway is gone; no one waits for it
            pipe.send(message)

    key = settings["key"]
    log = AuditLog(
        settings["path"],
        settings["batch_max_rows"],
        settings["batch_max_wait_ms"],
        settings["busy_timeout_ms"],
        signing_key=SigningKey(Ed25519PrivateKey.from_private_bytes(key)) if key else None,
        publish=(lambda signed: send(("checkpoint", signed))) if settings["publish"] else None,
        in_flight=lambda: in_flight[0],
        **settings["rest"],
    )
    try:
        log.open()
    except Exception as exc:
        pipe.send(("error", str(exc) or type(exc).__name__))
        return
    pending: set[asyncio.Task[None]] = set()

    async def write(number: int, record: AuditRecord) -> None:
        try:
            await log.record(record)
        except Exception as exc:
            _send((number, str(exc) or type(exc).__name__))
        else:
            _send((number, None))

    def receive() -> None:
        while True:
            try:
                if not pipe.poll():
                    return
                message = pipe.recv()
            except (EOFError, OSError):
                message = None
            if message is None:  # asked to stop, or the gateway is gone
                stop()
                return
            number, record, in_flight[0] = message
            task = loop.create_task(write(number, record))
            pending.add(task)
            task.add_done_callback(pending.discard)

    def stop() -> None:
        if loop.remove_reader(pipe.fileno()):  # False once stopped: SIGTERM, then the stop
            loop.stop()

    # Ctrl-C reaches the whole process group: the gateway then closes this log itself. A
    # SIGTERM stops taking rows, commits and answers those taken, and signs a last checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_reader(pipe.fileno(), receive)
    pipe.send(("ready",))
    try:
        loop.run_forever()
        if pending:  # what was sent before the stop is still committed and answered
            loop.run_until_complete(asyncio.wait(pending))
    finally:
        log.close()  # signs a last checkpoint, sent back below
        loop.run_until_complete(asyncio.sleep(0))
        pipe.close()
        loop.close()
