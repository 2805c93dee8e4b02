"""The audit trail: Merkle log, signed checkpoints, policy versions, sessions, reading, export."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess

import httpx
import pytest

from tests.harness import (
    BIN,
    EXAMPLE,
    REPO,
    audit_rows,
    copy_database,
    gateway_env,
    store_gateway,
    write_config,
)
from tracegate.audit.integrity import check_proof, entry_of, prove, verify
from tracegate.audit.keys import SigningKey, log_verifier
from tracegate.audit.tlog import MerkleLog

A_TRACE = "/traces/traces/team-a/tr-a001.json"
ORIGIN = "tracegate.local/audit"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tracegate"), *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def pristine_trail(tmp_path_factory, store, issuer):
    """A gateway with a checkpoint key that has served a mix of requests, once per module."""
    work = tmp_path_factory.mktemp("trail")
    key = work / "audit-key.pem"
    assert run_cli("audit", "keygen", str(key)).returncode == 0
    gateway = store_gateway(
        work,
        store,
        issuer,
        EXAMPLE,
        how="run",
        **{"audit.signing_key_file": str(key), "audit.checkpoint_every_rows": 3},
    ).start()
    try:
        token = issuer.token("frank@example.com", ["support-engineers"])
        other = issuer.token("grace@example.com", ["data-analysts"])
        with httpx.Client(base_url=gateway.url, timeout=30) as one_connection:
            for path in (A_TRACE, "/traces/traces/team-b/tr-b001.json", A_TRACE):
                one_connection.get(path, headers={"Authorization": f"Bearer {token}"})
        for _ in range(4):
            httpx.get(gateway.url + A_TRACE, headers={"Authorization": f"Bearer {other}"})
        httpx.get(gateway.url + A_TRACE)
    finally:
        gateway.stop()  # everything flushed; the file is ours now
    return work / "audit.sqlite3", key.with_name(key.name + ".vkey")


@pytest.fixture
def recorded(pristine_trail, tmp_path):
    """A copy of that trail of the test's own (tests tamper with it); and the verifier key."""
    database, vkey = pristine_trail
    return copy_database(database, tmp_path / "audit.sqlite3"), vkey


def test_an_untouched_trail_verifies(recorded):
    database, public = recorded
    result = verify(database, log_verifier(str(public), None))
    assert result.ok, result.problems
    assert result.rows == 8 and result.entries == 8 and result.checkpoints >= 2
    cli = run_cli("audit", "verify", str(database), "--public-key", str(public))
    assert cli.returncode == 0 and "8 rows" in cli.stdout and ": ok" in cli.stdout


def tamper(database, *statements):
    conn = sqlite3.connect(database)
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (
            ["UPDATE flows SET decision = 'allow' WHERE id = 2"],
            "entry 1 (flow 2): its row does not match its leaf (edited)",
        ),
        (["DELETE FROM flows WHERE id = 4"], "entry 3 (flow 4): its row is missing (deleted)"),
        (
            [
                "UPDATE flows SET id = 100 WHERE id = 3",
                "UPDATE flows SET id = 3 WHERE id = 5",
                "UPDATE flows SET id = 5 WHERE id = 100",
            ],
            "entry 2 (flow 3): its row does not match its leaf (edited)",
        ),
        (
            [
                "INSERT INTO flows (id, ts, flow_id, method, path, decision, reason, status) "
                "SELECT 9, ts, 'forged', 'GET', '/x', 'allow', '', 200 FROM flows WHERE id = 8"
            ],
            "flow 9: not in the log (inserted)",
        ),
        (["DELETE FROM log_nodes WHERE level = 1 AND idx = 1"], "log level 1: 3 nodes, 4"),
        (
            ["UPDATE log_nodes SET hash = zeroblob(32) WHERE level = 2 AND idx = 0"],
            "log node 0 at level 2: does not match its children",
        ),
    ],
    ids=["edited", "deleted", "reordered", "appended", "node-deleted", "node-edited"],
)
def test_verify_finds_tampering_and_says_where(recorded, statements, expected):
    database, public = recorded
    tamper(database, *statements)
    cli = run_cli("audit", "verify", str(database), "--public-key", str(public))
    assert cli.returncode == 1
    assert expected in cli.stderr, cli.stderr


def test_rebuilding_the_whole_log_is_caught_by_the_signed_checkpoints(recorded):
    database, public = recorded
    # An attacker without the signing key edits a row and rebuilds the tree from every row.
    conn = sqlite3.connect(database, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("BEGIN")
    conn.execute("UPDATE flows SET subject = 'someone-else' WHERE id = 1")
    entries = [(k, r, entry_of(conn, k, r, e)) for _, k, r, e in MerkleLog(conn).entries()]
    conn.execute("DELETE FROM log_nodes")
    conn.execute("DELETE FROM log_entries")
    MerkleLog(conn).append(entries)
    conn.execute("COMMIT")
    conn.close()
    result = verify(database, log_verifier(str(public), None))
    assert not any("does not match its leaf" in p for p in result.problems)
    assert any("no longer matches its signed root" in p for p in result.problems)


def test_a_forged_checkpoint_signature_is_caught(recorded):
    database, public = recorded
    conn = sqlite3.connect(database)
    with conn:
        note = conn.execute("SELECT note FROM log_checkpoints LIMIT 1").fetchone()[0]
        body, _, line = note.rpartition("\u2014 ")
        name, _, blob = line.partition(" ")
        forged = body + "\u2014 " + name + " " + blob[:10] + ("A" if blob[10] != "A" else "B")
        conn.execute("UPDATE log_checkpoints SET note = ?", (forged + blob[11:],))
    conn.close()
    result = verify(database, log_verifier(str(public), None))
    assert any("signature does not verify" in p for p in result.problems)


def test_every_row_names_a_stored_policy_version(recorded):
    database, _ = recorded
    conn = sqlite3.connect(database)
    versions = {v for (v,) in conn.execute("SELECT DISTINCT policy_version FROM flows")}
    stored = dict(conn.execute("SELECT version, config FROM policies").fetchall())
    conn.close()
    assert versions and versions <= set(stored)
    config = json.loads(stored[next(iter(versions))])
    assert "support" in config["roles"]


def test_a_session_is_one_token_until_idle(recorded):
    database, _ = recorded
    rows = audit_rows(database)
    sessions: dict[str, set[str]] = {}
    for row in rows:
        sessions.setdefault(row["session_id"], set()).add(row["subject"] or "-")
    for subject, flows in (("frank@example.com", 3), ("grace@example.com", 4)):
        (session,) = [s for s, subjects in sessions.items() if subjects == {subject}]
        assert sum(1 for r in rows if r["session_id"] == session) == flows
    anonymous = [r for r in rows if r["subject"] is None]
    assert anonymous and anonymous[0]["session_id"] not in {r["session_id"] for r in rows[:7]}
    cli = run_cli("audit", "sessions", str(database), "--subject", "frank@example.com", "--json")
    (session,) = json.loads(cli.stdout)
    assert session["flows"] == 3 and session["denied"] == 1


def test_search_and_show(recorded):
    database, _ = recorded
    cli = run_cli("audit", "search", str(database), "--decision", "deny", "--json")
    denied = json.loads(cli.stdout)
    assert {r["status"] for r in denied} == {403, 401}
    scoped = run_cli(
        "audit", "search", str(database), "--resource", "s3://traces/traces/team-b/", "--json"
    )
    assert [r["subject"] for r in json.loads(scoped.stdout)] == ["frank@example.com"]
    human = run_cli("audit", "show", str(database), denied[0]["flow_id"])
    assert "outside the scope" in human.stdout and human.returncode == 0


def test_export_jsonl_and_csv_with_the_documented_fields(recorded, tmp_path):
    from tracegate.audit.reader import EXPORT_FIELDS

    database, _ = recorded
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    for fmt, out in (("jsonl", jsonl), ("csv", table)):
        assert (
            run_cli("audit", "export", str(database), "--format", fmt, "-o", str(out)).returncode
            == 0
        )
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 8 and list(records[0]) == EXPORT_FIELDS
    assert isinstance(records[0]["masks"], dict)
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and list(rows[0]) == EXPORT_FIELDS


def test_no_token_or_unmasked_value_in_the_database_file(recorded):
    from tracegate.audit.bodies import decompress

    database, _ = recorded
    wal = database.with_suffix(".sqlite3-wal")
    data = database.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    conn = sqlite3.connect(database)
    stored = conn.execute("SELECT request, response_headers, response_body FROM bodies").fetchall()
    conn.close()
    assert stored  # bodies are kept, so look inside them too (they are compressed)
    for request, headers, blob in stored:
        data += request.encode() + headers.encode() + decompress(blob)
    assert b"[REDACTED:api-key]" in data  # the masked body is there...
    for needle in (b"eyJ", b"dana.reyes@example.com", b"4111111111111111", b"sk-demo-"):
        assert needle not in data  # ...and no token or unmasked value


def test_keygen_refuses_to_overwrite(tmp_path):
    key = tmp_path / "k.pem"
    SigningKey.generate(key)
    cli = run_cli("audit", "keygen", str(key))
    assert cli.returncode == 1 and "refusing to overwrite" in cli.stderr


def test_sessions_end_after_the_idle_window():
    from tracegate.sessions import SessionTracker

    now = [0.0]
    tracker = SessionTracker(idle_seconds=60, clock=lambda: now[0])
    first = tracker.session_for("token:a")
    now[0] = 59
    assert tracker.session_for("token:a") == first
    assert tracker.session_for("token:b") != first
    now[0] = 59 + 61
    assert tracker.session_for("token:a") != first


def test_kill_9_under_load_loses_no_row_and_every_checkpointed_entry_proves(
    make_gateway, issuer, tmp_path
):
    import os
    import signal
    import threading
    import time

    key = tmp_path / "kill.pem"
    SigningKey.generate(key, ORIGIN)
    gateway = make_gateway(
        how="run",
        **{"audit.signing_key_file": str(key), "audit.checkpoint_every_rows": 50},
    )
    token = issuer.token("heidi@example.com", ["support-engineers"])
    received: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=gateway.url, timeout=10) as http:
            for _ in range(2000):
                try:
                    response = http.get(A_TRACE, headers={"Authorization": f"Bearer {token}"})
                except httpx.HTTPError:
                    return  # the gateway is gone
                if response.status_code == 200:
                    with lock:
                        received.append(response.headers["x-tracegate-flow"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(2.5)
    os.killpg(gateway.process.pid, signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=30)
    gateway.process.wait(timeout=10)
    database = gateway.config.with_name("audit-0.sqlite3")
    recorded = {row["flow_id"] for row in audit_rows(database)}
    assert len(received) > 50
    assert set(received) <= recorded  # every response a client got has its row
    public = log_verifier(str(key.with_name("kill.pem.vkey")), None)
    result = verify(database, public)
    assert result.ok, result.problems
    # Every entry a signed checkpoint covers has a proof that checks with the public key only.
    conn = sqlite3.connect(database)
    (signed,) = conn.execute("SELECT MAX(size) FROM log_checkpoints").fetchone()
    flows = conn.execute(
        "SELECT f.flow_id FROM flows f JOIN log_entries e ON e.kind = 'flow' AND e.ref = f.id "
        "WHERE e.idx < ? ORDER BY e.idx",
        (signed,),
    ).fetchall()
    conn.close()
    assert signed and len(flows) == signed
    for (flow_id,) in flows:
        made = prove(database, flow_id)
        check_proof(made.proof, made.entry, public)


CHAIN_FORMAT = REPO / "tests" / "data" / "chain-format.sqlite3"  # written by the last release


def test_a_hash_chain_file_is_refused_in_one_line_then_migrated(store, issuer, tmp_path):
    import shutil

    database = tmp_path / "audit.sqlite3"
    shutil.copy(CHAIN_FORMAT, database)
    config = write_config(tmp_path / "config.yaml", store, issuer, database)
    refused = subprocess.run(
        [str(BIN / "tracegate"), "run", "--config", str(config)],
        env=gateway_env(store),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert f"run `tracegate audit migrate {database}` once" in refused.stderr
    assert "Traceback" not in refused.stderr
    migrated = run_cli("audit", "migrate", str(database))
    assert migrated.returncode == 0, migrated.stderr
    assert "5 rows and 2 approval events" in migrated.stdout
    result = verify(database)
    assert result.ok and result.entries == 7, result.problems
    again = run_cli("audit", "migrate", str(database))
    assert again.returncode == 1 and "nothing to migrate" in again.stderr


def test_a_broken_hash_chain_is_not_migrated(tmp_path):
    import shutil

    database = tmp_path / "old.sqlite3"
    shutil.copy(CHAIN_FORMAT, database)
    tamper(database, "UPDATE flows SET subject = 'mallory' WHERE id = 3")
    refused = run_cli("audit", "migrate", str(database))
    assert refused.returncode == 1 and "row 3: the old hash chain breaks here" in refused.stderr
    conn = sqlite3.connect(database)
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "log_entries" not in tables  # nothing of the migration stayed


@pytest.fixture
def dated_trail(tmp_path):
    """Ten rows with timestamps from January to October 2026, written by the real writer."""
    import asyncio

    from tracegate.audit import AuditLog, AuditRecord

    key_path = tmp_path / "k.pem"
    SigningKey.generate(key_path, ORIGIN)
    public = log_verifier(str(key_path.with_name("k.pem.vkey")), None)
    database = tmp_path / "dated.sqlite3"
    log = AuditLog(database, signing_key=SigningKey.load(key_path), checkpoint_every_rows=4)
    log.open()

    async def write() -> None:
        for month in range(1, 11):
            await log.record(
                AuditRecord(
                    flow_id=f"f{month}",
                    method="GET",
                    path="/x",
                    decision="allow",
                    reason="",
                    status=200,
                    ts=f"2026-{month:02d}-15T12:00:00Z",
                )
            )

    asyncio.run(write())
    log.close()
    return database, key_path, public


def test_prune_drops_rows_but_every_checkpoint_and_proof_still_holds(dated_trail, tmp_path):
    database, key, public = dated_trail
    before = prove(database, "f8")
    cli = run_cli("audit", "prune", str(database), "--before", "2026-06-01", "--key", str(key))
    assert cli.returncode == 0 and "removed 5 rows" in cli.stdout, cli.stderr
    assert [r["flow_id"] for r in audit_rows(database)] == [f"f{m}" for m in range(6, 11)]
    result = verify(database, public)
    assert result.ok, result.problems
    assert result.entries == 11 and result.checkpoints >= 3  # 10 rows and the prune
    # A proof made before the prune still checks, and so does a new one.
    check_proof(before.proof, before.entry, public)
    after = prove(database, "f8")
    assert check_proof(after.proof, after.entry, public).checkpoint.size == 11
    import asyncio

    from tracegate.audit import AuditLog, AuditRecord

    log = AuditLog(database, signing_key=SigningKey.load(key), origin=ORIGIN)
    log.open()
    asyncio.run(log.record(AuditRecord("new", "GET", "/y", "allow", "", 200)))
    log.close()
    assert verify(database, public).ok


def test_rows_deleted_past_the_prune_or_an_edited_prune_entry_are_caught(dated_trail):
    database, key, public = dated_trail
    run_cli("audit", "prune", str(database), "--before", "2026-06-01", "--key", str(key))
    tamper(database, "DELETE FROM flows WHERE flow_id = 'f7'")
    result = verify(database, public)
    assert any("entry 6 (flow 7): its row is missing (deleted)" in p for p in result.problems)
    tamper(database, "UPDATE log_entries SET entry = replace(entry, '4', '9') WHERE kind = 'prune'")
    result = verify(database, public)
    assert any("(prune): does not match its leaf (edited)" in p for p in result.problems)


def test_export_mitm_opens_in_mitmproxys_reader_with_exactly_what_was_served(
    make_gateway, issuer, tmp_path
):
    from mitmproxy import io

    gateway = make_gateway(how="run")
    token = issuer.token("ivan@example.com", ["support-engineers"])
    served = httpx.get(gateway.url + A_TRACE, headers={"Authorization": f"Bearer {token}"})
    analyst = issuer.token("judy@example.com", ["data-analysts"])
    httpx.get(gateway.url + A_TRACE, headers={"Authorization": f"Bearer {analyst}"})
    gateway.stop()
    database = gateway.config.with_name("audit-0.sqlite3")
    out = tmp_path / "flows.mitm"
    cli = run_cli("audit", "export", str(database), "--format", "mitm", "-o", str(out))
    assert cli.returncode == 0, cli.stderr
    with out.open("rb") as handle:
        flows = list(io.FlowReader(handle).stream())
    assert len(flows) == 2
    support, analyst_flow = flows
    assert support.id == served.headers["x-tracegate-flow"]
    assert support.response.content == served.content  # byte for byte what the client got
    assert "authorization" not in support.request.headers
    assert support.metadata["tracegate"]["subject"] == "ivan@example.com"
    # The analyst role keeps digests only (`bodies: none` in the example config).
    assert analyst_flow.response is None


def test_export_har_is_valid_har_1_2(make_gateway, issuer, tmp_path):
    gateway = make_gateway(how="run")
    token = issuer.token("ivan@example.com", ["support-engineers"])
    httpx.get(gateway.url + A_TRACE, headers={"Authorization": f"Bearer {token}"})
    httpx.get(
        gateway.url + "/traces/traces/team-b/tr-b001.json",
        headers={"Authorization": f"Bearer {token}"},
    )
    gateway.stop()
    database = gateway.config.with_name("audit-0.sqlite3")
    out = tmp_path / "flows.har"
    assert (
        run_cli("audit", "export", str(database), "--format", "har", "-o", str(out)).returncode == 0
    )
    har = json.loads(out.read_text())
    assert har["log"]["version"] == "1.2" and {"creator", "entries"} <= set(har["log"])
    entries = har["log"]["entries"]
    assert [e["response"]["status"] for e in entries] == [200, 403]
    for entry in entries:
        assert {"startedDateTime", "time", "request", "response", "cache", "timings"} <= set(entry)
        assert {"method", "url", "httpVersion", "headers", "queryString"} <= set(entry["request"])
        assert {"status", "content", "headers"} <= set(entry["response"])
    assert "[REDACTED:api-key]" in entries[0]["response"]["content"]["text"]
    assert token not in out.read_text()


def test_replay_shows_what_was_served_and_proves_the_record_against_the_store(
    make_gateway, issuer, store, tmp_path
):
    from tests.harness import gateway_env, write_config
    from tracegate.demo.traces import agent_trace

    key = "traces/team-a/replay-1.json"
    seeder = store.client()
    seeder.put_object(
        Bucket="traces",
        Key=key,
        Body=json.dumps(agent_trace("tr-r1", "team-a")).encode(),
        ContentType="application/json",
    )
    gateway = make_gateway(how="run")
    token = issuer.token("kim@example.com", ["support-engineers"])
    served = httpx.get(f"{gateway.url}/traces/{key}", headers={"Authorization": f"Bearer {token}"})
    gateway.stop()
    database = gateway.config.with_name("audit-0.sqlite3")
    flow_id = served.headers["x-tracegate-flow"]
    env = gateway_env(store)

    def replay(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "tracegate"), "audit", "replay", str(database), flow_id, *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    shown = replay()
    assert shown.returncode == 0 and served.text in shown.stdout
    faithful = replay("--against-store")
    assert faithful.returncode == 0, faithful.stdout + faithful.stderr
    assert "store content unchanged: yes" in faithful.stdout
    assert "served bytes reproduced: yes" in faithful.stdout

    other = write_config(
        tmp_path / "other.yaml",
        store,
        issuer,
        tmp_path / "x.sqlite3",
        **{"roles.support.scopes.debugging.detectors.actions.email": "redact"},
    )
    diff = replay("--policy", str(other))
    assert diff.returncode == 0
    assert any(
        line.startswith("+") and "[REDACTED:EMAIL]" in line for line in diff.stdout.splitlines()
    )

    seeder.put_object(
        Bucket="traces",
        Key=key,
        Body=json.dumps(agent_trace("tr-r1-v2", "team-a")).encode(),
        ContentType="application/json",
    )
    changed = replay("--against-store")
    assert changed.returncode == 1 and "store content unchanged: NO" in changed.stdout


def forged_body(database) -> str:
    """Replace the first kept body with other bytes (what `audit replay` would print)."""
    import zlib

    conn = sqlite3.connect(database)
    flow_id = conn.execute("SELECT flow_id FROM bodies ORDER BY ts_start LIMIT 1").fetchone()[0]
    with conn:
        conn.execute(
            "UPDATE bodies SET response_body = ? WHERE flow_id = ?",
            (zlib.compress(b'{"forged": "not what the requester saw"}'), flow_id),
        )
    conn.close()
    return flow_id


def test_a_forged_body_fails_verify_and_replay_refuses_to_show_it(recorded):
    database, public = recorded
    flow_id = forged_body(database)
    cli = run_cli("audit", "verify", str(database), "--public-key", str(public))
    assert cli.returncode == 1
    assert "kept body does not match the digest" in cli.stderr, cli.stderr
    replay = run_cli("audit", "replay", str(database), flow_id)
    assert replay.returncode != 0 and "forged" not in replay.stdout
    assert "does not match the digest in its audit row" in replay.stderr


def test_a_body_inserted_for_a_flow_that_kept_none_fails_verify(recorded):
    database, public = recorded
    conn = sqlite3.connect(database)
    with conn:  # the analyst's flows keep digests only (bodies: none)
        flow_id = conn.execute(
            "SELECT flow_id FROM flows WHERE body_sha256 IS NULL LIMIT 1"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO bodies (flow_id, request, status, response_headers, response_body, "
            "truncated, ts_start, ts_end) VALUES (?, '{}', 200, '[]', x'', 0, 0, 0)",
            (flow_id,),
        )
    conn.close()
    cli = run_cli("audit", "verify", str(database), "--public-key", str(public))
    assert cli.returncode == 1 and "kept body does not match" in cli.stderr


def test_audit_commands_on_a_file_that_is_no_audit_database_say_so_in_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    for args in (["verify"], ["prove", "x", "-o", str(tmp_path / "p")], ["migrate"], ["search"]):
        done = run_cli("audit", args[0], str(text), *args[1:])
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and "not a readable audit database" in done.stderr
    chain = run_cli("audit", "verify", str(CHAIN_FORMAT))
    assert chain.returncode == 1 and "tracegate audit migrate" in chain.stderr


def test_verify_reports_and_never_crashes_whatever_was_removed(recorded, tmp_path):
    import shutil

    database, public = recorded
    statements = [
        "DELETE FROM log_nodes WHERE level = 0 AND idx = 7",
        "DELETE FROM log_nodes",
        "DELETE FROM log_entries WHERE idx = 0",
        "UPDATE log_entries SET kind = 'nonsense' WHERE idx = 2",
        "UPDATE log_checkpoints SET note = 'garbage'",
        "UPDATE log_checkpoints SET size = size + 100",
        "INSERT INTO log_entries (idx, kind, ref, entry) VALUES (8, 'prune', 0, '{}')",
        "DROP TABLE bodies",
        "DELETE FROM bodies WHERE rowid = 1",
    ]
    for n, statement in enumerate(statements):
        copy = tmp_path / f"copy-{n}.sqlite3"
        shutil.copy(database, copy)
        tamper(copy, statement)
        result = verify(copy, log_verifier(str(public), None))
        assert result.problems, statement


def test_each_denial_records_its_code_and_older_rows_keep_their_leaves(recorded, tmp_path):
    import asyncio

    from tracegate.audit import AuditLog
    from tracegate.audit.log import COLUMNS, AuditRecord
    from tracegate.audit.tlog import entry_bytes

    database, _ = recorded
    codes = {r["status"]: r["code"] for r in audit_rows(database)}
    assert codes[200] is None and codes[403] == "AccessDenied" and codes[401] == "Unauthenticated"
    # A file from before the column: its rows' leaves hold no `code`, and still verify once a
    # gateway has added the column and written a denial with one.
    old = tmp_path / "old.sqlite3"

    def write(*records: AuditRecord) -> None:
        log = AuditLog(old)
        log.open()

        async def record() -> None:
            for one in records:
                await log.record(one)

        asyncio.run(record())
        log.close()

    write(AuditRecord("f-old", "GET", "/x", "deny", "no", 403))  # written as before the column
    conn = sqlite3.connect(old)
    conn.execute("ALTER TABLE flows DROP COLUMN code")
    conn.commit()
    conn.close()
    write(AuditRecord("f-new", "GET", "/x", "deny", "no", 403, code="AccessDenied"))
    assert verify(old).ok
    # A row without a code commits to exactly what the release before the column wrote.
    [row] = audit_rows(old, flow_id="f-old")
    before = [c for c in COLUMNS if c != "code"]
    with sqlite3.connect(old) as conn:
        conn.row_factory = sqlite3.Row
        assert entry_of(conn, "flow", row["id"], None) == entry_bytes("flow", row, before)
    conn = sqlite3.connect(old)
    conn.execute("UPDATE flows SET code = 'Allowed' WHERE flow_id = 'f-new'")  # its leaf has it
    conn.commit()
    conn.close()
    assert any("(edited)" in p for p in verify(old).problems)
