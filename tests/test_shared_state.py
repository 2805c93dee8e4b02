"""State shared by gateway replicas in a real PostgreSQL (Debian's server, started by the tests):
the schema and its migrations, the DSN's sources, and SAML assertions refused on every replica
once one has seen them, with the database down as well as up."""

from __future__ import annotations

import re
import subprocess
import threading

import httpx
import psycopg
import pytest

from tests.harness import BIN, gateway_env, write_config
from tests.samlidp import TestIdP
from tests.test_approvals import (
    PLANTED_API_KEY,
    RULES,
    audit_path,
    decide,
    error_of,
    events,
    fetch,
    in_background,
    rules,
    wait_pending,
)
from tests.test_saml import A_TRACE, audited_reason, provider_config, with_saml
from tracegate.config import ConfigError, StateConfig
from tracegate.demo.postgres import LocalPostgres
from tracegate.state.database import SharedDatabase, describe, dsn_of
from tracegate.state.schema import LATEST, MIGRATIONS


@pytest.fixture(scope="module")
def idp() -> TestIdP:
    return TestIdP()


def versions(dsn: str) -> list[int]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM tracegate_schema ORDER BY 1")]


def test_an_empty_database_is_migrated_once_however_many_replicas_start(postgres):
    dsn = postgres.dsn()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            SharedDatabase(dsn).open().close()
        except BaseException as exc:
            errors.append(exc)

    replicas = [threading.Thread(target=start) for _ in range(4)]
    for replica in replicas:
        replica.start()
    for replica in replicas:
        replica.join(timeout=60)
    assert errors == []
    assert versions(dsn) == [version for version, _ in MIGRATIONS]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT to_regclass('saml_assertions')").fetchone()[0] is not None
    SharedDatabase(dsn).open().close()  # a restart finds nothing to do
    assert versions(dsn) == [version for version, _ in MIGRATIONS]


def saml_config(tmp_path, store, issuer, idp, name: str, **state):
    return write_config(
        tmp_path / f"{name}.yaml",
        store,
        issuer,
        tmp_path / f"{name}.sqlite3",
        **{
            "identity.saml": [provider_config(idp, tmp_path)],
            "state": {"backend": "postgres", **state},
        },
    )


def run_once(config, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "tracegate"), "run", "--config", str(config), "--listen-port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_database_migrated_by_a_newer_tracegate_stops_start_up_in_one_line(
    postgres, tmp_path, store, issuer, idp
):
    dsn = postgres.dsn()
    SharedDatabase(dsn).open().close()
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO tracegate_schema (version) VALUES (%s)", (LATEST + 1,))
    config = saml_config(tmp_path, store, issuer, idp, "newer")
    result = run_once(config, gateway_env(store, TRACEGATE_DATABASE_URL=dsn))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"schema is version {LATEST + 1}, newer than this tracegate's {LATEST}" in lines[0]
    assert "Traceback" not in result.stderr


def test_without_a_dsn_start_up_names_the_variable_and_never_prints_a_password(
    postgres, tmp_path, store, issuer, idp
):
    config = saml_config(tmp_path, store, issuer, idp, "nodsn")
    result = run_once(config, gateway_env(store))
    assert result.returncode == 1
    assert "state.dsn_env: environment variable TRACEGATE_DATABASE_URL is not set" in result.stderr
    unreachable = "postgresql://tracegate:s3cret-pw@127.0.0.1:1/tracegate"
    result = run_once(config, gateway_env(store, TRACEGATE_DATABASE_URL=unreachable))
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "state.backend postgres: PostgreSQL at 127.0.0.1:1/tracegate" in line
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "error connecting" not in result.stdout  # the pool's own retries are not logged


def test_the_dsn_comes_from_the_environment_or_a_file_and_is_never_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_URL", "postgresql://u:pw@db.internal:6543/traces")
    assert dsn_of(StateConfig(backend="postgres", dsn_env="PG_URL")).endswith("/traces")
    secret = tmp_path / "dsn"
    secret.write_text("host=db2 port=5433 dbname=audit user=u password=pw\n")
    state = StateConfig(backend="postgres", dsn_file=str(secret))
    assert dsn_of(state) == "host=db2 port=5433 dbname=audit user=u password=pw"
    assert describe(dsn_of(state)) == "db2:5433/audit"
    assert describe("postgresql://u:pw@db.internal:6543/traces") == "db.internal:6543/traces"
    (tmp_path / "empty").write_text("")
    with pytest.raises(ConfigError, match=r"state\.dsn_file: .* is empty"):
        dsn_of(StateConfig(backend="postgres", dsn_file=str(tmp_path / "empty")))


def test_replicas_refuse_each_others_used_assertions_and_accept_each_others_tokens(
    postgres, make_gateway, idp, tmp_path, store
):
    dsn = postgres.dsn()
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(dsn)
    provider = provider_config(idp, tmp_path)
    shared = {"identity.saml": [provider], "state": {"backend": "postgres"}}
    a = make_gateway(how="run", env=gateway_env(store, TRACEGATE_DATABASE_URL=dsn), **shared)
    b = make_gateway(
        how="run",
        **{**shared, "state": {"backend": "postgres", "dsn_file": str(dsn_file)}},
    )
    assertion = idp.signed()
    assert with_saml(a, assertion).status_code == 200
    again = with_saml(b, assertion)
    assert again.status_code == 401
    assert "already used (replay)" in again.json()["error"]["reason"]
    exchanged = httpx.post(b.admin_url + "/saml/exchange", content=assertion, timeout=30)
    assert exchanged.status_code == 401
    fresh = idp.signed()
    assert with_saml(b, fresh).status_code == 200  # B serves assertions it has not seen
    assert with_saml(a, fresh).status_code == 401
    # A token from one replica's /saml/exchange is good on the other (one shared key).
    exchanged = httpx.post(a.admin_url + "/saml/exchange", content=idp.signed(), timeout=30)
    assert exchanged.status_code == 200, exchanged.text
    bearer = {"Authorization": f"Bearer {exchanged.json()['token']}"}
    assert httpx.get(b.url + A_TRACE, headers=bearer, timeout=30).status_code == 200
    ready = httpx.get(b.admin_url + "/readyz", timeout=10).json()
    assert ready["checks"]["database"]["ok"] is True
    metrics = httpx.get(b.admin_url + "/metrics", timeout=10).text
    size = re.search(r'tracegate_database_connections\{state="size"\} (\d+)', metrics)
    assert size is not None and 1 <= float(size.group(1)) <= 8  # state.pool_max
    assert 'tracegate_database_connections{state="waiting"} 0.0' in metrics


def test_with_the_database_down_requests_that_need_it_are_refused_until_it_is_back(
    make_gateway, idp, tmp_path, store, tokens
):
    server = LocalPostgres().start()  # its own server: this test stops it
    try:
        env = gateway_env(store, TRACEGATE_DATABASE_URL=server.dsn())
        shared = {
            "identity.saml": [provider_config(idp, tmp_path)],
            "state": {"backend": "postgres", "grace_seconds": 4},
            RULES: rules(wait=20),
        }
        a = make_gateway(how="run", env=env, **shared)
        b = make_gateway(how="run", env=env, **shared)
        assert with_saml(a, idp.signed()).status_code == 200
        waiting = in_background(fetch, a, tokens["alice"])
        wait_pending(a, tokens["sec1"])
        server.down()
        # Held while the database went away: refused after the grace period, not left
        # waiting for a decision it could no longer hear of.
        error = error_of(waiting.result(timeout=20), 503, "ApprovalUnavailable")
        assert "unreachable" in error["reason"] and "state.grace_seconds" in error["reason"]
        refused = with_saml(a, idp.signed())
        assert refused.status_code == 401
        reason = refused.json()["error"]["reason"]
        assert "cannot record the assertion ID (PostgreSQL at 127.0.0.1:" in reason
        assert "cannot record the assertion ID" in audited_reason(a, refused)
        # An approval cannot be recorded, so the request is refused, not let through.
        error_of(fetch(a, tokens["alice"], timeout=30), 503, "ApprovalUnavailable")
        ready = httpx.get(a.admin_url + "/readyz", timeout=30)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"]["ok"] is False
        server.up()
        # No restart: assertions are checked again, and replicas hear each other's decisions.
        assert with_saml(a, idp.signed()).status_code == 200
        held = in_background(fetch, a, tokens["alice"])
        [approval] = wait_pending(b, tokens["sec1"])
        assert decide(b, tokens["sec1"], approval["id"]).is_success
        assert held.result(timeout=30).status_code == 200
    finally:
        server.stop()


def test_a_flow_held_on_one_replica_is_released_by_an_approval_on_another(
    postgres, make_gateway, tokens, store
):
    env = gateway_env(store, TRACEGATE_DATABASE_URL=postgres.dsn())
    shared = {RULES: rules(), "state": {"backend": "postgres"}}
    a = make_gateway(how="run", env=env, **shared)
    b = make_gateway(how="run", env=env, **shared)
    # Dana may approve others' requests, never her own: on no replica.
    as_support = {"X-Tracegate-Role": "support"}
    held = in_background(fetch, a, tokens["dual"], **as_support)
    [approval] = wait_pending(b, tokens["sec1"])  # B lists what A holds
    error_of(decide(b, tokens["dual"], approval["id"]), 403, "SelfApproval")
    assert not held.done()
    assert decide(b, tokens["sec1"], approval["id"], comment="ok for INC").is_success
    response = held.result(timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["x-tracegate-approval"] == approval["id"]
    assert PLANTED_API_KEY not in response.text  # released masked
    # The retry lands on B: served by the grant made for A's flow, without a new approval.
    again = fetch(b, tokens["dual"], timeout=20, **as_support)
    assert again.status_code == 200 and again.headers["x-tracegate-approval"] == approval["id"]
    # Each replica's own trail records the events it caused.
    on_a = [(e["event"], e["actor"]) for e in events(a, approval["id"])]
    on_b = [(e["event"], e["actor"]) for e in events(b, approval["id"])]
    assert ("requested", "dana@example.com") in on_a
    assert ("refused", "dana@example.com") in on_b and ("approved", "sec1@example.com") in on_b
    assert ("grant_used", "dana@example.com") in on_b
    for replica in (a, b):  # and each trail, with those events as leaves, still verifies
        replica.stop()
        checked = subprocess.run(
            [str(BIN / "tracegate"), "audit", "verify", audit_path(replica)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_session_continues_across_replicas_until_idle_and_survives_a_database_outage(postgres):
    import asyncio
    import time

    from tracegate.state.sessions import SharedSessionTracker

    dsn = postgres.dsn()
    databases = [SharedDatabase(dsn).open() for _ in range(2)]
    try:
        a, b = (SharedSessionTracker(d, idle_seconds=0.6) for d in databases)

        async def scenario() -> None:
            first = await a.resolve("token:x")
            assert await b.resolve("token:x") == first  # the other replica continues it
            assert await a.resolve("token:y") != first
            await asyncio.sleep(0.8)  # idle on both
            second = await b.resolve("token:x")
            assert second != first
            assert await a.resolve("token:x") == second  # A learns of it from the database

        asyncio.run(scenario())
        postgres.down()
        try:
            started = time.monotonic()
            local = asyncio.run(a.resolve("token:z"))  # no database: a session of its own
            assert local and asyncio.run(a.resolve("token:z")) == local
            assert time.monotonic() - started < 15
        finally:
            postgres.up()
    finally:
        for database in databases:
            database.close()
