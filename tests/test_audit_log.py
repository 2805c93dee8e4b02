from __future__ import annotations

import asyncio
import sqlite3

import pytest

from tests.harness import audit_rows
from tracegate.audit import AuditLog, AuditRecord, AuditWriteError


def record(n: int) -> AuditRecord:
    return AuditRecord(
        flow_id=f"f{n}", method="GET", path=f"/t/{n}", decision="allow", reason="", status=200
    )


def test_rows_are_durable_when_record_returns_and_batched(tmp_path):
    log = AuditLog(tmp_path / "a.sqlite3", batch_max_rows=50, batch_max_wait_ms=20)
    log.open()

    async def write_many() -> None:
        await asyncio.gather(*(log.record(record(n)) for n in range(200)))
        # Durable now: another connection sees every row before the log is closed.
        assert len(audit_rows(tmp_path / "a.sqlite3")) == 200

    try:
        asyncio.run(write_many())
    finally:
        log.close()
    assert log.written == 200


def test_a_locked_database_fails_the_waiting_flows(tmp_path):
    path = tmp_path / "a.sqlite3"
    log = AuditLog(path, busy_timeout_ms=100)
    log.open()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AuditWriteError, match="audit write failed"):
            asyncio.run(log.record(record(1)))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    asyncio.run(log.record(record(2)))  # recovers once the lock is gone
    log.close()
    assert [r["flow_id"] for r in audit_rows(path)] == ["f2"]


def test_an_unwritable_path_fails_at_open(tmp_path):
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(sqlite3.OperationalError):
        AuditLog(tmp_path / "dir.sqlite3").open()


def test_recording_without_a_running_writer_raises(tmp_path):
    with pytest.raises(AuditWriteError, match="not running"):
        asyncio.run(AuditLog(tmp_path / "a.sqlite3").record(record(1)))


def test_an_older_audit_database_is_refused_with_a_clear_message(tmp_path):
    import sqlite3

    from tracegate.audit.log import AuditSchemaError

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE flows (id INTEGER PRIMARY KEY, ts TEXT, flow_id TEXT)")
    conn.close()
    with pytest.raises(AuditSchemaError, match=r"older tracegate .*move it aside"):
        AuditLog(path).open()


def test_request_summaries_hide_every_identity_header_by_its_configured_name():
    from tracegate.audit.bodies import request_summary
    from tracegate.config import IdentityConfig

    identity = IdentityConfig(
        token_header="X-Corp-Token",
        saml_header="X-Corp-Assertion",
        providers=[{"name": "p", "issuer": "i", "audience": "a", "jwks_file": "k"}],
    )
    headers = {
        "x-corp-token": "jwt",
        "x-corp-assertion": "saml",
        "authorization": "Bearer jwt",
        "accept": "application/json",
    }
    summary = request_summary("GET", "/x", [], headers, identity.credential_headers)
    assert summary["headers"] == [["accept", "application/json"]]


def test_a_row_that_cannot_be_made_fails_its_flow_only(tmp_path):
    log = AuditLog(tmp_path / "a.sqlite3", batch_max_rows=50, batch_max_wait_ms=50)
    log.open()
    broken = record(99)
    broken.masks = {"rules": {"x": object()}}  # not JSON: its row cannot be written

    async def write() -> list:
        return await asyncio.gather(
            log.record(record(1)), log.record(broken), log.record(record(2)),
            return_exceptions=True,
        )  # fmt: skip

    try:
        results = asyncio.run(write())
    finally:
        log.close()
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], AuditWriteError)
    assert {r["flow_id"] for r in audit_rows(tmp_path / "a.sqlite3")} == {"f1", "f2"}


def _timed_records(
    tmp_path, delay_ms: float, in_flight: int, gaps: list[float]
) -> tuple[AuditLog, list[float]]:
    """A log with that commit delay and that many flows in flight; one row recorded after
    each gap (seconds from the start). The log (closed) and how long each record took."""
    log = AuditLog(tmp_path / "a.sqlite3", commit_delay_ms=delay_ms, in_flight=lambda: in_flight)

    async def one(n: int, gap: float) -> float:
        await asyncio.sleep(gap)
        started = asyncio.get_running_loop().time()
        await log.record(record(n))
        return asyncio.get_running_loop().time() - started

    async def run() -> list[float]:
        return list(await asyncio.gather(*(one(n, gap) for n, gap in enumerate(gaps))))

    log.open()
    try:
        return log, asyncio.run(run())
    finally:
        log.close()


def test_a_lone_flow_never_waits_for_a_group_commit(tmp_path):
    log, (took,) = _timed_records(tmp_path, 2000, 1, [0.0])
    assert took < 1.0 and log.commits == 1


def test_flows_in_flight_share_one_commit_within_the_delay(tmp_path):
    log, took = _timed_records(tmp_path, 1500, 4, [0.0, 0.05, 0.1, 0.15])
    # The fourth row ended the wait: every in-flight flow had queued its row.
    assert log.written == 4 and log.commits == 1
    assert took[0] < 1.0


def test_a_group_commit_waits_no_longer_than_the_delay(tmp_path):
    log, (took,) = _timed_records(tmp_path, 300, 8, [0.0])
    assert 0.25 <= took < 2.0 and log.commits == 1


def test_verify_reads_one_snapshot_while_the_gateway_goes_on_writing(tmp_path, monkeypatch):
    """A live log grows during a verify: entries read before a new leaf and nodes read after
    it must still agree (the console and the CLI verify a running gateway's log)."""
    from tracegate.audit import integrity

    path = tmp_path / "a.sqlite3"

    def write(numbers: range) -> None:
        log = AuditLog(path)
        log.open()
        try:

            async def run() -> None:
                for n in numbers:
                    await log.record(record(n))

            asyncio.run(run())
        finally:
            log.close()

    write(range(3))
    real = integrity._check_nodes

    def nodes_after_another_write(*args, **kwargs):
        write(range(3, 5))  # the gateway commits two more rows mid-verify
        return real(*args, **kwargs)

    monkeypatch.setattr(integrity, "_check_nodes", nodes_after_another_write)
    result = integrity.verify(path)
    assert result.problems == [] and result.entries == 3
    monkeypatch.setattr(integrity, "_check_nodes", real)
    assert integrity.verify(path).entries == 5
