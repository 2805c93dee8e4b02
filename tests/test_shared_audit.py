"""One audit log for every replica, in a real PostgreSQL: each gateway process commits its own
rows, one elected integrator orders them into the Merkle log and signs checkpoints, another
takes over when it is killed, and `tracegate audit ... --dsn` reads and checks the shared log
with the same code as a replica's file."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import threading
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


class Load:
    """`clients` threads, each cycling over the gateways still listed, until stopped; every
    answer is kept (gateway, status, flow id, error code)."""

    def __init__(self, gateways: list, token: str, clients: int = 4) -> None:
        self.gateways = list(gateways)
        self.token = token
        self.answers: list[tuple[object, int, str, str]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(clients)
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self, n: int) -> None:
        with httpx.Client(timeout=30) as client:
            for i in range(100_000):  # bounded; stopped long before
                if self._stop.is_set():
                    return
                gateway = self.gateways[(n + i) % len(self.gateways)]
                try:
                    answer = client.get(
                        gateway.url + A_TRACE, headers={"Authorization": f"Bearer {self.token}"}
                    )
                except httpx.HTTPError:
                    continue  # a killed gateway, or one restarting its connections
                code = (
                    answer.json().get("error", {}).get("code", "")
                    if answer.status_code != 200
                    else ""
                )
                flow = answer.headers.get("x-tracegate-flow", "")
                self.answers.append((gateway, answer.status_code, flow, code))

    def served(self) -> set[str]:
        return {flow for _, status, flow, _ in self.answers if status == 200}

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.answers)
        while len(self.answers) < start + count:
            assert time.monotonic() < deadline, "the clients got no answers"
            time.sleep(0.05)


def logged_flows(dsn: str) -> tuple[set[str], set[str]]:
    """Flow ids with a row, and those of them with a leaf in the log."""
    with psycopg.connect(dsn) as conn:
        rows = {r[0] for r in conn.execute("SELECT flow_id FROM flows")}
        leaves = {
            r[0]
            for r in conn.execute(
                "SELECT f.flow_id FROM flows f JOIN log_entries e "
                "ON e.kind = 'flow' AND e.ref = f.id"
            )
        }
    return rows, leaves


def test_killing_a_replica_and_the_integrator_under_load_loses_no_served_flow(
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
    assert get(replicas[0], token).status_code == 200
    wait_integrated(dsn, 1)
    [leader] = [r for r in replicas if metric(r, "tracegate_audit_integrator") == 1]
    others = [r for r in replicas if r is not leader]
    with Load(replicas, token) as load:
        load.wait_for(40)
        for victim in (others[0], leader):  # a replica, then the integrator, mid-run
            load.gateways.remove(victim)
            os.killpg(victim.process.pid, signal.SIGKILL)  # no shutdown, no last checkpoint
            victim.process.wait(timeout=10)
            load.wait_for(40)
    survivor = others[1]
    served = load.served()
    assert len(served) >= 80
    deadline = time.monotonic() + 30
    while True:  # the survivor takes over and integrates what the integrator left queued
        rows, leaves = logged_flows(dsn)
        if (served <= leaves and queued(dsn) == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert served <= rows, "a client received a response whose row was never committed"
    assert served <= leaves
    assert metric(survivor, "tracegate_audit_integrator") == 1
    wait_integrated(dsn, len(rows))
    checked = cli("audit", "verify", "--dsn", dsn, "--public-key", f"{log_key}.vkey")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rows)} log entries ({len(rows)} rows" in checked.stdout


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


def test_with_the_database_stopped_for_5_s_under_load_nothing_is_served_unrecorded(
    postgres, make_gateway, issuer, store, log_key
):
    dsn = postgres.dsn()
    env = gateway_env(store, TRACEGATE_DATABASE_URL=dsn)
    replicas = [make_gateway(how="run", env=env, **shared_log(dsn, log_key)) for _ in range(2)]
    token = issuer.token("frank@example.com", ["support-engineers"])
    assert get(replicas[0], token).status_code == 200
    with Load(replicas, token) as load:
        load.wait_for(20)
        postgres.down()
        try:
            stopped = len(load.answers)
            time.sleep(5)
            during = load.answers[stopped:]
        finally:
            postgres.up()
        deadline = time.monotonic() + 30
        while not any(status == 200 for _, status, _, _ in load.answers[stopped + len(during) :]):
            assert time.monotonic() < deadline, "service did not resume"
            time.sleep(0.2)
        load.wait_for(20)
    refused = [(status, code) for _, status, _, code in during if status != 200]
    assert refused, "requests kept being served with the database stopped"
    assert {status for status, _ in refused} == {503}
    assert {code for _, code in refused} <= {"AuditUnavailable", "GatewayFailure"}, refused
    served = load.served()
    deadline = time.monotonic() + 30
    while not served <= logged_flows(dsn)[1]:
        assert time.monotonic() < deadline, "served flows missing from the log"
        time.sleep(0.2)
    checked = cli("audit", "verify", "--dsn", dsn, "--public-key", f"{log_key}.vkey")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_shared_log_is_replayed_exported_and_pruned_with_every_proof_kept(
    postgres, make_gateway, issuer, store, log_key, tmp_path
):
    dsn = postgres.dsn()
    env = gateway_env(store, TRACEGATE_DATABASE_URL=dsn)
    gateway = make_gateway(how="run", env=env, **shared_log(dsn, log_key))
    token = issuer.token("frank@example.com", ["support-engineers"])
    first = get(gateway, token)
    assert first.status_code == 200 and get(gateway, token).status_code == 200
    wait_integrated(dsn, 2)
    at = ("--dsn", "env:TRACEGATE_DATABASE_URL")
    dsn_env = {"TRACEGATE_DATABASE_URL": dsn}
    replayed = cli("audit", "replay", *at, first.headers["x-tracegate-flow"], env=dsn_env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.split("\n", 1)[1].strip() == first.text.strip()  # exactly as served
    exported = tmp_path / "flows.jsonl"
    done = cli("audit", "export", *at, "--format", "jsonl", "-o", str(exported), env=dsn_env)
    assert done.returncode == 0 and len(exported.read_text().splitlines()) == 2
    pruned = cli(
        "audit", "prune", *at, "--before", "2999-01-01", "--key", str(log_key), env=dsn_env
    )
    assert pruned.returncode == 0 and "removed 2 rows" in pruned.stdout, pruned.stderr
    later = get(gateway, token)  # the integrator goes on after the prune's entry
    assert later.status_code == 200
    wait_integrated(dsn, 4)
    vkey = f"{log_key}.vkey"
    checked = cli("audit", "verify", *at, "--public-key", vkey, env=dsn_env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 log entries (1 rows" in checked.stdout
    proof = tmp_path / "later.tlog-proof"
    made = cli(
        "audit", "prove", *at, later.headers["x-tracegate-flow"], "-o", str(proof), env=dsn_env
    )
    assert made.returncode == 0, made.stderr
    ok = cli("audit", "check-proof", str(proof), "--entry", f"{proof}.entry", "--public-key", vkey)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def console_client(admin_url: str, user: str) -> httpx.Client:
    """A client signed in to the console as `user` of the demo issuer (the code flow a
    browser follows: the provider's form, the callback, the session cookie)."""
    client = httpx.Client(timeout=30)
    form = client.get(client.get(admin_url + "/console/login").headers["location"])
    query = dict(httpx.URL(str(form.url)).params)
    back = client.post(str(form.url).split("?")[0], data={**query, "user": user})
    landed = client.get(back.headers["location"], follow_redirects=True)
    assert landed.status_code == 200, landed.text
    return client


def test_the_console_reads_and_verifies_the_shared_log(
    postgres, make_gateway, issuer, store, log_key
):
    dsn = postgres.dsn()
    env = gateway_env(store, TRACEGATE_DATABASE_URL=dsn)
    issuer.add_user("sec1", "sec1@example.com", ["security-leads"])
    console = {"console.enabled": True, "console.auditor_roles": ["security"]}
    gateway = make_gateway(how="run", env=env, **shared_log(dsn, log_key), **console)
    token = issuer.token("frank@example.com", ["support-engineers"])
    served = get(gateway, token)
    wait_integrated(dsn, 1)
    client = console_client(gateway.admin_url, "sec1")
    try:
        audit = client.get(gateway.admin_url + "/console/audit")
        assert audit.status_code == 200 and "frank@example.com" in audit.text
        flow = client.get(f"{gateway.admin_url}/console/flows/{served.headers['x-tracegate-flow']}")
        assert flow.status_code == 200 and "entry 0 of the Merkle log" in flow.text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', audit.text).group(1)
        checked = client.post(
            gateway.admin_url + "/console/verify",
            data={"_csrf": csrf},
            headers={"Origin": gateway.admin_url},
            follow_redirects=True,
        )
        assert checked.status_code == 200 and 'class="ok">ok:' in checked.text, checked.text
    finally:
        client.close()


def test_rows_not_yet_integrated_are_counted_not_reported_as_inserted(postgres):
    from tracegate.audit.integrity import verify

    dsn = postgres.dsn()
    SharedDatabase(dsn).open().close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "WITH row AS (INSERT INTO flows (flow_id, decision, status) VALUES ('f-1', 'allow', "
            "200) RETURNING id) INSERT INTO audit_pending (kind, ref) SELECT 'flow', id FROM row"
        )
        conn.execute("INSERT INTO flows (flow_id, decision, status) VALUES ('f-2', 'allow', 200)")
    log = PortableConnection.connect(dsn)
    try:
        result = verify(log)
    finally:
        log.close()
    assert result.pending == 1
    # f-1 waits for the integrator; f-2 was slipped in, with no queue entry: inserted.
    assert result.problems == ["flow 2: not in the log (inserted)"]


def test_a_row_deleted_before_it_is_integrated_keeps_its_place_and_verify_names_it(postgres):
    from tracegate.audit.integrity import verify
    from tracegate.state.integrator import Integrator

    dsn = postgres.dsn()
    database = SharedDatabase(dsn).open()
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for flow in ("f-1", "f-2"):
                conn.execute(
                    "WITH row AS (INSERT INTO flows (flow_id, decision, status) VALUES (%s, "
                    "'allow', 200) RETURNING id) INSERT INTO audit_pending (kind, ref) "
                    "SELECT 'flow', id FROM row",
                    (flow,),
                )
            conn.execute("DELETE FROM flows WHERE flow_id = 'f-1'")  # before integration
        integrator = Integrator(database, None, None)
        integrator.turn()
        assert integrator.leader and integrator.integrated == 2 and queued(dsn) == 0
        integrator.stop()
        log = PortableConnection.connect(dsn)
        try:
            result = verify(log)
        finally:
            log.close()
    finally:
        database.close()
    assert result.entries == 2
    assert result.problems == ["entry 0 (flow 1): its row is missing (deleted)"]
