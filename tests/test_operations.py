"""Operating the gateway: health, readiness, metrics, decision logs, reloads (real processes)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time

import httpx
import pytest
import yaml

from tests.harness import audit_rows, gateway_env
from tracegate.demo.store import free_port
from tracegate.demo.traces import PLANTED_EMAIL

A_TRACE = "/traces/traces/team-a/tr-a001.json"


@pytest.fixture
def token(issuer):
    return issuer.token("erin@example.com", ["support-engineers"])


def get(url, token=None, path=A_TRACE):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url + path, headers=headers, timeout=30)


def wait_ready(gateway, timeout=15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(gateway.admin_url + "/readyz", timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response.json()
        time.sleep(0.3)


def test_health_and_readiness_when_everything_is_in_place(make_gateway):
    gateway = make_gateway(how="run", **{"admin.readiness_cache_seconds": 0})
    assert httpx.get(gateway.admin_url + "/healthz").json() == {"status": "alive"}
    body = wait_ready(gateway)
    assert body["ready"] is True
    assert set(body["checks"]) == {"config", "store", "jwks", "audit"}
    assert all(check["ok"] for check in body["checks"].values())


def test_the_admin_listener_is_not_reachable_through_the_store_route(make_gateway, token):
    gateway = make_gateway()
    assert get(gateway.url, token, "/metrics").status_code == 403
    assert get(gateway.url, token, "/readyz").status_code == 403


def failing_check(gateway, name: str) -> dict:
    deadline = time.monotonic() + 15
    while True:
        response = httpx.get(gateway.admin_url + "/readyz", timeout=10)
        body = response.json()
        if not body["checks"][name]["ok"] or time.monotonic() > deadline:
            assert response.status_code == 503
            assert body["ready"] is False
            return body["checks"][name]
        time.sleep(0.3)


def test_not_ready_when_the_store_is_unreachable(make_gateway):
    gateway = make_gateway(**{"upstream.endpoint": f"http://127.0.0.1:{free_port()}"})
    assert "store unreachable" in failing_check(gateway, "store")["detail"]


def test_not_ready_when_the_store_refuses_the_gateways_credentials(make_gateway, store):
    env = gateway_env(store, TRACEGATE_UPSTREAM_SECRET_ACCESS_KEY="wrong-secret-" * 3)
    gateway = make_gateway(env=env)
    assert "refused the gateway's credentials" in failing_check(gateway, "store")["detail"]


def test_not_ready_when_no_signing_keys_are_loaded(make_gateway, issuer):
    provider = {
        "name": "down",
        "issuer": issuer.issuer,
        "audience": "tracegate",
        "jwks_uri": f"http://127.0.0.1:{free_port()}/jwks.json",
    }
    gateway = make_gateway(**{"identity.providers": [provider]})
    assert "no signing keys loaded for down" in failing_check(gateway, "jwks")["detail"]


def test_not_ready_when_the_audit_database_is_locked(make_gateway):
    gateway = make_gateway(**{"admin.readiness_cache_seconds": 0})
    assert wait_ready(gateway)["ready"]
    blocker = sqlite3.connect(gateway.config.with_name("audit-0.sqlite3"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        assert "not writable" in failing_check(gateway, "audit")["detail"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_not_ready_while_the_script_is_unloaded(make_gateway, tmp_path):
    import shutil

    from tests.harness import REPO

    script = tmp_path / "gateway.py"
    shutil.copy(REPO / "addons" / "gateway.py", script)
    gateway = make_gateway(script=script, **{"admin.readiness_cache_seconds": 0})
    assert wait_ready(gateway)["ready"]
    time.sleep(1.1)
    script.write_text(script.read_text() + "\nbroken(\n")
    assert "script is unloaded" in failing_check(gateway, "config")["detail"]


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_exactly_what_was_sent(make_gateway, issuer, token):
    gateway = make_gateway(how="run")
    expired = issuer.token("erin@example.com", ["support-engineers"], ttl=-300)
    for _ in range(3):
        assert get(gateway.url, token).status_code == 200
    for _ in range(2):
        assert get(gateway.url, token, "/traces/traces/team-b/tr-b001.json").status_code == 403
    for _ in range(4):
        assert get(gateway.url, expired).status_code == 401
    text = httpx.get(gateway.admin_url + "/metrics").text
    allowed = {"decision": "allow", "role": "support", "purpose": "debugging"}
    assert metric(text, "tracegate_requests_total", operation="GetObject", **allowed) == 3
    assert metric(text, "tracegate_denials_total", code="AccessDenied") == 2
    assert metric(text, "tracegate_denials_total", code="Unauthenticated") == 4
    assert metric(text, "tracegate_token_failures_total", reason="expired") == 4
    assert metric(text, "tracegate_masks_applied_total", type="detect.email") == 3
    assert metric(text, "tracegate_masks_applied_total", type="api-key") == 3
    assert metric(text, "tracegate_request_seconds_count") == 9
    assert metric(text, "tracegate_masking_seconds_count") == 3
    assert metric(text, "tracegate_audit_write_seconds_count") == 9
    assert metric(text, "tracegate_body_bytes_count", direction="upstream") == 3
    assert metric(text, "tracegate_config_info") == 1
    # Labels carry role and purpose names at most: no subject, key, token or trace id.
    for secret in ("erin@example.com", "tr-a001", "team-b", token[:20], expired[:20]):
        assert secret not in text


def test_decision_log_is_one_json_line_per_request_without_secrets(make_gateway, token, tmp_path):
    log = tmp_path / "decisions.jsonl"
    gateway = make_gateway(**{"logging.decisions": str(log)})
    responses = [get(gateway.url, token), get(gateway.url, token, "/traces/other/x.json")]
    responses.append(get(gateway.url, "not-a-token"))
    deadline = time.monotonic() + 5
    while len(log.read_text().splitlines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["status"] for e in entries] == [r.status_code for r in responses]
    assert [e["flow_id"] for e in entries] == [r.headers["x-tracegate-flow"] for r in responses]
    first = entries[0]
    assert first["decision"] == "allow" and first["role"] == "support"
    assert first["masks"]["detect.email"] == 1 and first["resource"].endswith("tr-a001.json")
    text = log.read_text()
    assert token.split(".")[2] not in text and "not-a-token" not in text
    assert PLANTED_EMAIL not in text and "4111111111111111" not in text


def edit_config(path, **changes) -> None:
    config = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(config, sort_keys=False))


EMAIL_ACTION = "roles.support.scopes.debugging.detectors.actions.email"


@pytest.mark.parametrize("how", ["run", "script"])
def test_a_changed_file_is_reloaded_and_an_invalid_one_is_refused(make_gateway, token, how):
    gateway = make_gateway(how=how)
    first = get(gateway.url, token)
    assert "[EMAIL:" in first.json()["messages"][1]["content"]
    edit_config(gateway.config, **{EMAIL_ACTION: "redact"})
    gateway.wait_for_log("tracegate: reloaded")
    second = get(gateway.url, token)
    assert "[REDACTED:EMAIL]" in second.json()["messages"][1]["content"]
    assert second.headers["x-tracegate-policy"] != first.headers["x-tracegate-policy"]
    good = gateway.config.read_text()
    gateway.config.write_text(good.replace("default_purpose: debugging", "default_purpos: x", 1))
    gateway.wait_for_log("rejected, keeping the config in force")
    line = next(l for l in gateway.log().splitlines() if "rejected" in l)  # noqa: E741
    assert str(gateway.config) in line and "roles.support.default_purpose: Field required" in line
    third = get(gateway.url, token)
    assert third.headers["x-tracegate-policy"] == second.headers["x-tracegate-policy"]
    text = httpx.get(gateway.admin_url + "/metrics").text
    assert metric(text, "tracegate_config_reload_failures_total") >= 1
    assert metric(text, "tracegate_config_reloads_total") >= 1


def test_sighup_reloads_tracegate_run(make_gateway, token):
    gateway = make_gateway(how="run")
    before = get(gateway.url, token).headers["x-tracegate-policy"]
    # Change the file but keep its mtime, so only the signal can trigger the reload.
    stat = os.stat(gateway.config)
    edit_config(gateway.config, **{EMAIL_ACTION: "redact"})
    os.utime(gateway.config, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    time.sleep(1.5)
    assert get(gateway.url, token).headers["x-tracegate-policy"] == before
    gateway.process.send_signal(signal.SIGHUP)
    gateway.wait_for_log("tracegate: reloaded")
    assert get(gateway.url, token).headers["x-tracegate-policy"] != before


def test_reloads_under_load_never_mix_policy_versions(make_gateway, token):
    gateway = make_gateway(how="run")
    path = gateway.config
    version_a = get(gateway.url, token).headers["x-tracegate-policy"]
    seen: list[httpx.Response] = []
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            for _ in range(400):
                if stop.is_set():
                    return
                seen.append(client.get(A_TRACE, headers={"Authorization": f"Bearer {token}"}))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    valid_a = path.read_text()
    edit_config(path, **{EMAIL_ACTION: "redact"})
    valid_b = path.read_text()
    invalid = valid_b.replace("default_purpose: debugging", "default_purpos: x", 1)
    for text in (valid_b, invalid, valid_a, invalid, valid_b, valid_a, valid_b):
        path.write_text(text)
        time.sleep(1.3)  # the watcher checks once a second
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    versions = {r.headers["x-tracegate-policy"] for r in seen}
    assert len(versions) == 2 and version_a in versions
    audit = path.with_name("audit-0.sqlite3")
    rows = {r["flow_id"]: r for r in audit_rows(audit)}
    for response in seen:
        assert response.status_code == 200
        version = response.headers["x-tracegate-policy"]
        content = response.json()["messages"][1]["content"]
        # The masking matches the version the response names, and so does its audit row.
        expected = "[EMAIL:" if version == version_a else "[REDACTED:EMAIL]"
        assert expected in content
        assert rows[response.headers["x-tracegate-flow"]]["policy_version"] == version


def test_log_level_is_configurable(make_gateway):
    quiet = make_gateway(how="run", **{"logging.level": "warning"})
    assert "tracegate: loaded" not in quiet.log()
    chatty = make_gateway(how="run")
    assert "tracegate: loaded" in chatty.log()


def test_setting_the_same_config_path_from_mitmweb_reloads_it(make_gateway, token):
    from tests.test_fail_closed import web_session

    gateway = make_gateway(how="web")
    before = get(gateway.url, token).headers["x-tracegate-policy"]
    stat = os.stat(gateway.config)
    edit_config(gateway.config, **{EMAIL_ACTION: "redact"})
    os.utime(gateway.config, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # no watcher trigger
    with web_session(gateway) as web:
        assert web.put("/options", json={"tracegate_config": str(gateway.config)}).is_success
    gateway.wait_for_log("tracegate: reloaded")
    assert get(gateway.url, token).headers["x-tracegate-policy"] != before
