"""One audit log for every replica, in a real PostgreSQL: each gateway process commits its own
rows, one elected integrator orders them into the Merkle log and signs checkpoints, another
takes over when it is killed, and `tracegate audit ... --dsn` reads and checks the shared log
with the same code as a replica's file."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

import httpx
import psycopg
import pytest

from tests.harness import BIN, gateway_env
from tests.test_approvals import (
    PLANTED_API_KEY,
    RULES,
    decide,
    fetch,
    in_background,
    rules,
    wait_pending,
)
from tracegate.audit.keys import SigningKey
from tracegate.audit.tlog import MerkleLog, immediate
from tracegate.state.database import SharedDatabase
from tracegate.state.portable import PortableConnection

A_TRACE = "/traces/traces/team-a/tr-a001.json"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tracegate"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def log_key(tmp_path):
    key = tmp_path / "log.pem"
    assert cli("audit", "keygen", str(key)).returncode == 0
    return key


def shared_log(dsn: str, key, **audit) -> dict:
    """Config overrides: state and the audit log in the shared database, checkpoints signed."""
    settings = {
        "backend": "postgres",
        "signing_key_file": str(key),
        "integrate_every_seconds": 0.2,
        "checkpoint_every_seconds": 0.5,
        **audit,
    }
    return {"state": {"backend": "postgres"}, **{f"audit.{k}": v for k, v in settings.items()}}


def queued(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM audit_pending").fetchone()[0]


def wait_integrated(dsn: str, entries: int, timeout: float = 20) -> None:
    """Until the log holds `entries` entries, all signed, and nothing is queued."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            size = conn.execute("SELECT count(*) FROM log_entries").fetchone()[0]
            signed = conn.execute("SELECT max(size) FROM log_checkpoints").fetchone()[0]
        if size >= entries and signed == size and queued(dsn) == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the log did not reach {entries} signed entries: {size}, {signed}")


def metric(gateway, name: str) -> float:
    text = httpx.get(gateway.admin_url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def get(gateway, token: str, path: str = A_TRACE) -> httpx.Response:
    return httpx.get(gateway.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_two_replicas_write_one_log_that_verifies_and_proves_each_flow(
    postgres, make_gateway, issuer, store, log_key, tmp_path
):
    dsn = postgres.dsn()
    env = gateway_env(store, TRACEGATE_DATABASE_URL=dsn)
    a = make_gateway(
        how="run", env=env, extra_args=["--instance-id", "gw-a"], **shared_log(dsn, log_key)
    )
    b = make_gateway(
        how="run", env=env, extra_args=["--instance-id", "gw-b"], **shared_log(dsn, log_key)
    )
    token = issuer.token("frank@example.com", ["support-engineers"])
    served = [get(a, token), get(b, token), get(a, token, "/traces/traces/team-b/tr-b001.json")]
    served.append(httpx.get(b.url + A_TRACE, timeout=30))  # no token: denied, and recorded
    assert [r.status_code for r in served[:2]] == [200, 200]
    assert served[3].status_code == 401
    wait_integrated(dsn, 4)
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT flow_id, instance FROM flows ORDER BY id").fetchall()
        indices = [r[0] for r in conn.execute("SELECT idx FROM log_entries ORDER BY idx")]
    assert sorted(i for _, i in rows) == ["gw-a", "gw-a", "gw-b", "gw-b"]
    assert {f for f, _ in rows} == {r.headers["x-tracegate-flow"] for r in served}
    assert indices == [0, 1, 2, 3]  # contiguous from 0, whoever wrote the rows
    # Frank's token on A, then B, then A: one session, continued across replicas; the shared
    # table holds a keyed hash of it, never the token's plain digest.
    with psycopg.connect(dsn) as conn:
        franks = conn.execute(
            "SELECT DISTINCT session_id FROM flows WHERE subject = 'frank@example.com'"
        ).fetchall()
        keys = [r[0] for r in conn.execute("SELECT key FROM sessions")]
    assert len(franks) == 1
    digest = hashlib.sha256(token.encode()).hexdigest()
    assert keys and not any(digest in k or k.endswith(digest) for k in keys)
    # Exactly one replica integrates.
    assert sorted(
        [metric(a, "tracegate_audit_integrator"), metric(b, "tracegate_audit_integrator")]
    ) == [0, 1]
    assert 0 <= metric(a, "tracegate_audit_integration_lag_seconds") < 5
    ready = httpx.get(a.admin_url + "/readyz", timeout=10).json()
    assert ready["checks"]["audit"]["ok"], ready
    assert "integration lag" in ready["checks"]["audit"]["detail"]

    # The CLI reads the shared log with the DSN from the environment (never on the command line).
    vkey = f"{log_key}.vkey"
    dsn_env = {"TRACEGATE_DATABASE_URL": dsn}
    checked = cli(
        "audit", "verify", "--dsn", "env:TRACEGATE_DATABASE_URL", "--public-key", vkey, env=dsn_env
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 log entries (4 rows, 0 approval events)" in checked.stdout
    assert "signatures checked" in checked.stdout and checked.stdout.rstrip().endswith(": ok")
    flow = served[1].headers["x-tracegate-flow"]
    proof = tmp_path / "flow.tlog-proof"
    made = cli(
        "audit", "prove", flow, "-o", str(proof), "--dsn", "env:TRACEGATE_DATABASE_URL", env=dsn_env
    )
    assert made.returncode == 0, made.stderr
    ok = cli("audit", "check-proof", str(proof), "--entry", f"{proof}.entry", "--public-key", vkey)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert '"instance":"gw-b"' in proof.with_name(proof.name + ".entry").read_text()
    found = cli("audit", "search", "--dsn", "env:TRACEGATE_DATABASE_URL", "--json", env=dsn_env)
    assert found.returncode == 0 and len(__import__("json").loads(found.stdout)) == 4
    sessions = cli("audit", "sessions", "--dsn", "env:TRACEGATE_DATABASE_URL", env=dsn_env)
    assert sessions.returncode == 0 and "frank@example.com" in sessions.stdout

    # An edit in the database is caught, naming the entry.
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE flows SET subject = 'someone-else' WHERE flow_id = %s", (flow,))
    tampered = cli("audit", "verify", "--dsn", "env:TRACEGATE_DATABASE_URL", env=dsn_env)
    assert tampered.returncode == 1
    assert "its row does not match its leaf (edited)" in tampered.stderr


def test_the_dsn_for_the_cli_is_never_printed_and_a_bad_one_fails_in_one_line():
    result = cli("audit", "verify", "--dsn", "postgresql://u:s3cret-pw@127.0.0.1:1/audit")
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line.startswith("tracegate: postgres 127.0.0.1:1/audit: ")
    assert "s3cret-pw" not in result.stderr + result.stdout
    missing = cli("audit", "verify", "--dsn", "env:NO_SUCH_VARIABLE_HERE")
    assert "environment variable NO_SUCH_VARIABLE_HERE is not set" in missing.stderr
    both = cli("audit", "verify", "some.sqlite3", "--dsn", "env:X")
    assert both.returncode != 0 and "not both" in both.stderr


def test_when_the_integrator_is_killed_another_replica_takes_over_and_the_log_holds(
    postgres, make_gateway, issuer, store, log_key
):
    dsn = postgres.dsn()
    env = gateway_env(store, TRACEGATE_DATABASE_URL=dsn)
    replicas = [
        make_gateway(
            how="run", env=env, extra_args=["--instance-id", f"gw-{n}"], **shared_log(dsn, log_key)
        )
        for n in range(3)
    ]
    token = issuer.token("frank@example.com", ["support-engineers"])
    for replica in replicas:
        assert get(replica, token).status_code == 200
    wait_integrated(dsn, 3)
    [leader] = [r for r in replicas if metric(r, "tracegate_audit_integrator") == 1]
    os.killpg(leader.process.pid, signal.SIGKILL)  # no shutdown, no last checkpoint
    leader.process.wait(timeout=10)
    survivors = [r for r in replicas if r is not leader]
    for replica in survivors:
        assert get(replica, token).status_code == 200  # served, and committed, meanwhile
    wait_integrated(dsn, 5, timeout=30)
    assert sorted(metric(r, "tracegate_audit_integrator") for r in survivors) == [0, 1]
    checked = cli("audit", "verify", "--dsn", dsn, "--public-key", f"{log_key}.vkey")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "5 log entries (5 rows" in checked.stdout


def test_approval_events_from_every_replica_enter_the_shared_log(
    postgres, make_gateway, tokens, store, log_key
):
    dsn = postgres.dsn()
    env = gateway_env(store, TRACEGATE_DATABASE_URL=dsn)
    shared = {RULES: rules(), **shared_log(dsn, log_key)}
    a = make_gateway(how="run", env=env, extra_args=["--instance-id", "gw-a"], **shared)
    b = make_gateway(how="run", env=env, extra_args=["--instance-id", "gw-b"], **shared)
    held = in_background(fetch, a, tokens["dual"], **{"X-Tracegate-Role": "support"})
    [approval] = wait_pending(b, tokens["sec1"])
    assert decide(b, tokens["sec1"], approval["id"], comment="ok").is_success
    response = held.result(timeout=30)
    assert response.status_code == 200 and PLANTED_API_KEY not in response.text
    time.sleep(0.5)
    deadline = time.monotonic() + 20
    while queued(dsn) and time.monotonic() < deadline:
        time.sleep(0.1)
    with psycopg.connect(dsn) as conn:
        replicas = dict(
            conn.execute(
                "SELECT event, replica FROM approval_events WHERE approval_id = %s",
                (approval["id"],),
            ).fetchall()
        )
    assert replicas["requested"] == "gw-a" and replicas["approved"] == "gw-b"
    a.stop(), b.stop()  # each signs what is left at shutdown
    checked = cli("audit", "verify", "--dsn", dsn, "--public-key", f"{log_key}.vkey")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "approval events)" in checked.stdout and " 0 approval events" not in checked.stdout
    assert not list(a.workdir.glob("audit-*.sqlite3"))  # no replica kept a file of its own


def test_a_signer_with_a_stale_view_of_the_latest_checkpoint_cannot_fork_the_log(
    postgres, tmp_path
):
    dsn = postgres.dsn()
    SharedDatabase(dsn).open().close()
    SigningKey.generate(tmp_path / "k.pem")
    signer = SigningKey.load(tmp_path / "k.pem").signer("tracegate.test/a")
    conn = PortableConnection.connect(dsn)
    try:
        log = MerkleLog(conn)
        with immediate(conn):
            log.append([("prune", 0, b'{"n":1}')])
            first = log.sign(signer)
        with immediate(conn):
            log.append([("prune", 0, b'{"n":2}')])
            assert log.sign(signer) is not None  # another integrator extended `first`
        with immediate(conn):
            log.append([("prune", 0, b'{"n":3}')])
        stale = MerkleLog(conn)
        stale.latest = lambda: first  # read before the other integrator committed
        with pytest.raises(psycopg.errors.UniqueViolation), immediate(conn):
            stale.sign(signer)
        assert [c.size for c in log.checkpoints()] == [1, 2]
    finally:
        conn.close()


def test_rows_waiting_too_long_for_the_log_fail_readiness_until_the_integrator_is_back(
    postgres, make_gateway, issuer, store, log_key
):
    dsn = postgres.dsn()
    env = gateway_env(store, TRACEGATE_DATABASE_URL=dsn)
    settings = shared_log(dsn, log_key, integration_alert_seconds=2)
    replicas = [make_gateway(how="run", env=env, **settings) for _ in range(2)]
    token = issuer.token("frank@example.com", ["support-engineers"])
    assert get(replicas[0], token).status_code == 200
    wait_integrated(dsn, 1)
    [leader] = [r for r in replicas if metric(r, "tracegate_audit_integrator") == 1]
    [other] = [r for r in replicas if r is not leader]
    os.killpg(leader.process.pid, signal.SIGSTOP)  # alive, holding the lock, integrating nothing
    try:
        assert get(other, token).status_code == 200  # still served: its row is committed
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            audit = httpx.get(other.admin_url + "/readyz", timeout=10).json()["checks"]["audit"]
            if not audit["ok"]:
                break
            time.sleep(0.2)
        assert not audit["ok"] and "waited" in audit["detail"], audit
        assert metric(other, "tracegate_audit_integration_lag_seconds") >= 2
    finally:
        os.killpg(leader.process.pid, signal.SIGCONT)
    wait_integrated(dsn, 2)
    deadline = time.monotonic() + 20
    while not httpx.get(other.admin_url + "/readyz", timeout=10).json()["checks"]["audit"]["ok"]:
        assert time.monotonic() < deadline, "readiness did not come back"
        time.sleep(0.2)


def test_with_the_database_away_no_flow_is_served_unrecorded_and_service_resumes(
    postgres, make_gateway, issuer, store, log_key
):
    dsn = postgres.dsn()
    env = gateway_env(store, TRACEGATE_DATABASE_URL=dsn)
    gateway = make_gateway(how="run", env=env, **shared_log(dsn, log_key))
    token = issuer.token("frank@example.com", ["support-engineers"])
    assert get(gateway, token).status_code == 200
    postgres.down()
    try:
        refused = get(gateway, token)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "AuditUnavailable"
        assert "tr-a001" not in refused.text and "messages" not in refused.text
    finally:
        postgres.up()
    deadline = time.monotonic() + 30
    while get(gateway, token).status_code != 200:
        assert time.monotonic() < deadline, "service did not resume"
        time.sleep(0.5)
    wait_integrated(dsn, 2)
