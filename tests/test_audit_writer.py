"""The audit writer as a child process (`audit.writer: process`, the default)."""

from __future__ import annotations

import asyncio
import os
import pickle
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from tests.harness import audit_rows
from tracegate.audit import AuditRecord, AuditWriteError
from tracegate.audit.integrity import verify
from tracegate.audit.keys import SigningKey, log_verifier
from tracegate.audit.writer import ProcessAuditLog, take

ORIGIN = "tracegate.local/audit"
REPO = Path(__file__).resolve().parents[1]


def record(n: int) -> AuditRecord:
    body = {"flow_id": f"f{n}", "request": "{}", "status": 200, "response_headers": "[]"}
    body |= {"served": b"x" * 700, "truncated": 0, "ts_start": 1.0, "ts_end": 2.0}
    return AuditRecord(
        flow_id=f"f{n}", method="GET", path=f"/t/{n}", decision="allow", reason="", status=200,
        body=body,
    )  # fmt: skip


def gone(pid: int, seconds: float = 15) -> bool:
    """The process has exited (a zombie waiting for a reaper counts: it runs no more)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def signed_log(tmp_path: Path, every: int) -> tuple[ProcessAuditLog, list]:
    """An opened writer process that signs a checkpoint every `every` rows; what it publishes."""
    SigningKey.generate(tmp_path / "k.pem", ORIGIN)
    published: list = []
    log = ProcessAuditLog(
        tmp_path / "a.sqlite3",
        signing_key=SigningKey.load(tmp_path / "k.pem"),
        checkpoint_every_rows=every,
        publish=published.append,
    )
    log.open()
    return log, published


def verified(tmp_path: Path):
    """The audit file checked against the key `signed_log` made."""
    return verify(tmp_path / "a.sqlite3", log_verifier(str(tmp_path / "k.pem.vkey"), None))


def test_the_writer_process_commits_each_row_before_its_flow_goes_on(tmp_path):
    log, published = signed_log(tmp_path, every=50)
    assert log.running and log.check()[0]
    child = log._process.pid
    assert child != os.getpid()

    async def write_many() -> None:
        await asyncio.gather(*(log.record(record(n)) for n in range(120)))
        # Durable now: another connection sees every row before the log is closed.
        assert len(audit_rows(tmp_path / "a.sqlite3")) == 120

    try:
        asyncio.run(write_many())
    finally:
        log.close()
    assert log.written == 120 and not log.running
    assert gone(child)
    # Checkpoints signed in the child reach the gateway's publisher, the last one at close.
    assert published and published[-1].size == 120
    result = verified(tmp_path)
    assert result.ok, result.problems
    assert result.rows == 120 and result.checkpoints == len(published)


def test_a_dead_writer_process_denies_waiting_and_later_flows(tmp_path):
    log = ProcessAuditLog(tmp_path / "a.sqlite3")
    log.open()
    child = log._process.pid

    async def scenario() -> None:
        await log.record(record(1))
        os.kill(child, signal.SIGSTOP)  # the next row waits in the pipe...
        waiting = asyncio.ensure_future(log.record(record(2)))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        os.kill(child, signal.SIGKILL)  # ...and the writer dies before committing it
        with pytest.raises(AuditWriteError, match="exited"):
            await asyncio.wait_for(waiting, 15)
        with pytest.raises(AuditWriteError, match="not running"):
            await log.record(record(3))

    try:
        asyncio.run(scenario())
        assert not log.running
        ready, why = log.check()
        assert not ready and "not running" in why
    finally:
        log.close()
    assert [r["flow_id"] for r in audit_rows(tmp_path / "a.sqlite3")] == ["f1"]


def test_a_batch_waits_for_the_gateways_flows_in_flight_and_a_flow_alone_never_waits():
    ours, theirs = socket.socketpair()
    gateway, child = Connection(ours.detach()), Connection(theirs.detach())
    records = selectors.DefaultSelector()
    records.register(child, selectors.EVENT_READ)

    def send(n: int, in_flight: int) -> None:
        gateway.send_bytes(pickle.dumps((n, record(n), in_flight)))

    def two_more_later() -> None:
        time.sleep(0.3)
        send(1, 3)
        send(2, 3)

    try:
        send(0, 3)  # three flows in flight: the batch waits (up to 30 s) for the other two
        helper = threading.Thread(target=two_more_later)
        helper.start()
        batch, ended = take(child, records, 256, 0.0, 30.0)
        helper.join()
        assert [n for _, n in batch] == [0, 1, 2] and not ended
        send(3, 1)  # alone: committed at once, not after the 30 s
        started = time.monotonic()
        batch, ended = take(child, records, 256, 0.0, 30.0)
        assert [n for _, n in batch] == [3] and not ended
        assert time.monotonic() - started < 10
        gateway.send_bytes(pickle.dumps(None))  # the gateway's stop
        assert take(child, records, 256, 0.0, 30.0) == ([], True)
    finally:
        gateway.close()
        child.close()


def test_sigterm_stops_the_writer_process_after_a_last_checkpoint(tmp_path):
    log, published = signed_log(tmp_path, every=1000)
    child = log._process.pid

    async def scenario() -> None:
        await asyncio.gather(*(log.record(record(n)) for n in range(3)))
        assert not published  # 3 rows: no checkpoint due yet
        os.kill(child, signal.SIGTERM)
        for _ in range(300):  # its last checkpoint comes back, then the pipe ends
            if not log.running:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(AuditWriteError, match="not running"):
            await log.record(record(4))

    try:
        asyncio.run(scenario())
    finally:
        log.close()
    assert gone(child)
    assert [c.size for c in published] == [3]
    result = verified(tmp_path)
    assert result.ok and result.rows == 3, result.problems


def between_two_good_ones(log: ProcessAuditLog, broken: AuditRecord) -> list:
    """Record f1, `broken`, f2 at once; what each flow got."""

    async def write() -> list:
        return await asyncio.gather(
            log.record(record(1)), log.record(broken), log.record(record(2)),
            return_exceptions=True,
        )  # fmt: skip

    log.open()
    try:
        return asyncio.run(write())
    finally:
        log.close()


@pytest.mark.parametrize(
    "masks",
    [
        pytest.param({"x": lambda: None}, id="cannot be pickled onto the pipe"),
        pytest.param({"x": {1, 2}}, id="pickles, but is not JSON: no row can be made"),
    ],
)
def test_a_record_that_cannot_be_written_fails_its_flow_only(tmp_path, masks):
    log = ProcessAuditLog(tmp_path / "a.sqlite3", batch_max_wait_ms=50)
    broken = record(9)
    broken.masks = {"rules": masks}
    results = between_two_good_ones(log, broken)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AuditWriteError)
    assert {r["flow_id"] for r in audit_rows(tmp_path / "a.sqlite3")} == {"f1", "f2"}
    assert log.written == 2


GATEWAY_KILLED = """
import asyncio, sys
sys.path.insert(0, {addons!r})
from tracegate.audit import AuditRecord
from tracegate.audit.writer import ProcessAuditLog, take
log = ProcessAuditLog({path!r})
log.open()
asyncio.run(log.record(AuditRecord("f1", "GET", "/t", "allow", "", 200)))
print(log._process.pid, flush=True)
sys.stdin.read()
"""


def test_the_writer_process_ends_when_its_gateway_is_killed(tmp_path):
    code = GATEWAY_KILLED.format(addons=str(REPO / "addons"), path=str(tmp_path / "a.sqlite3"))
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(parent.stdout.readline())
        assert not gone(child, 0.2)
        parent.kill()  # SIGKILL to the gateway alone: no shutdown, no close()
        parent.wait(timeout=10)
        assert gone(child), "the audit writer outlived its gateway"
    finally:
        if parent.poll() is None:
            parent.kill()
    assert [r["flow_id"] for r in audit_rows(tmp_path / "a.sqlite3")] == ["f1"]
