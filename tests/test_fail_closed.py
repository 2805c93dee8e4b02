"""Nothing unmasked reaches a client, whatever breaks: proven against real gateway processes.

Faults are injected into the gateway process through a `sitecustomize.py` on its PYTHONPATH,
which patches one core function before mitmproxy starts; the production code has no test hooks.
"""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import sqlite3
import subprocess
import textwrap
import time

import httpx
import pytest

from tests.harness import (
    BIN,
    REPO,
    audit_rows,
    gateway_env,
    held_flow,
    web_session,
    write_config,
)
from tracegate.demo.traces import PLANTED_API_KEY, PLANTED_EMAIL

A_TRACE = "/traces/traces/team-a/tr-a001.json"
RUN_MODES = ["script", "run"]


@pytest.fixture
def token(issuer):
    return issuer.token("carol@example.com", ["support-engineers"])


def fetch(gateway, token, path=A_TRACE):
    return httpx.get(gateway.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def assert_denied_without_data(response, status, code=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    if code:
        assert error["code"] == code
    assert PLANTED_EMAIL not in response.text and PLANTED_API_KEY not in response.text
    assert "messages" not in response.text
    return error


def audited(gateway, response, timeout=5.0):
    audit = gateway.config.with_name(gateway.config.stem.replace("config-", "audit-") + ".sqlite3")
    flow_id = response.headers.get("x-tracegate-flow")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = audit_rows(audit, flow_id=flow_id) if flow_id else audit_rows(audit)
        if rows:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no audit row for flow {flow_id}")


def faulty_env(store, tmp_path, patch: str) -> dict[str, str]:
    site = tmp_path / "fault"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(patch))
    env = gateway_env(store)
    env["PYTHONPATH"] = f"{site}:{REPO / 'addons'}"
    return env


@pytest.mark.parametrize("how", RUN_MODES)
def test_exception_while_authorizing_is_a_denial(make_gateway, store, tmp_path, token, how):
    env = faulty_env(
        store,
        tmp_path,
        """
        import tracegate.gateway
        async def authorize(self, exchange):
            raise RuntimeError("injected fault in authorize")
        tracegate.gateway.Gateway.authorize = authorize
        """,
    )
    gateway = make_gateway(how=how, env=env)
    response = fetch(gateway, token)
    error = assert_denied_without_data(response, 502, "GatewayFailure")
    assert "internal error while authorizing" in error["reason"]
    assert audited(gateway, response)[0]["decision"] == "deny"


@pytest.mark.parametrize("how", RUN_MODES)
def test_exception_while_masking_is_a_denial(make_gateway, store, tmp_path, token, how):
    env = faulty_env(
        store,
        tmp_path,
        """
        import tracegate.gateway
        def respond(self, *args, **kwargs):
            raise RuntimeError("injected fault in respond")
        tracegate.gateway.Gateway.respond = respond
        """,
    )
    gateway = make_gateway(how=how, env=env)
    response = fetch(gateway, token)
    error = assert_denied_without_data(response, 502, "GatewayFailure")
    assert "masking" in error["reason"]
    row = audited(gateway, response)[0]
    assert row["decision"] == "deny" and row["status"] == 502


@pytest.mark.parametrize("how", RUN_MODES)
def test_guard_answers_when_even_the_denial_path_raises(make_gateway, store, tmp_path, token, how):
    # Every addon's own error handling fails too; only the Guard (its own chain entry) is left.
    env = faulty_env(
        store,
        tmp_path,
        """
        import tracegate.proxy.flowbridge as bridge
        def apply(flow, answer):
            raise RuntimeError("injected fault in apply")
        bridge.apply = apply
        """,
    )
    gateway = make_gateway(how=how, env=env)
    allowed = fetch(gateway, token)
    error = assert_denied_without_data(allowed, 502, "GatewayFailure")
    assert "not released" in error["reason"]
    anonymous = httpx.get(gateway.url + A_TRACE, timeout=30)
    assert_denied_without_data(anonymous, 502)
    assert "injected fault" in gateway.log()
    rows = audited(gateway, allowed)
    assert any(r["reason"].startswith("guard:") for r in rows)


def test_audit_write_failure_denies_until_the_audit_recovers(make_gateway, token):
    gateway = make_gateway(**{"audit.busy_timeout_ms": 200})
    assert fetch(gateway, token).status_code == 200
    audit = gateway.config.with_name("audit-0.sqlite3")
    blocker = sqlite3.connect(audit, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        response = fetch(gateway, token)
        assert_denied_without_data(response, 503, "AuditUnavailable")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert fetch(gateway, token).status_code == 200


def test_a_broken_script_reload_ends_in_denials_until_it_loads_again(make_gateway, tmp_path, token):
    script = tmp_path / "gateway.py"
    shutil.copy(REPO / "addons" / "gateway.py", script)
    gateway = make_gateway(script=script)
    assert fetch(gateway, token).status_code == 200
    good = script.read_text()
    time.sleep(1.1)  # mitmproxy notices changes by mtime, once a second
    script.write_text(good + "\nthis is not python(\n")
    gateway.wait_for_log("tracegate script is unloaded")
    response = fetch(gateway, token)
    error = assert_denied_without_data(response, 502)
    assert "script is unloaded" in error["reason"]
    assert audited(gateway, response)
    time.sleep(1.1)
    script.write_text(good)
    gateway.wait_for_log("script reloaded")
    assert fetch(gateway, token).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"stream_large_bodies": "1k"},
        {"scripts": []},
        {"ssl_insecure": True},
        {"body_size_limit": None},
        {"mode": ["regular"]},
        {"modify_body": ["/~s/x/y"]},
        {"websocket": True},
    ],
    ids=lambda c: next(iter(c)),
)
def test_mitmweb_cannot_change_options_that_weaken_the_gateway(make_gateway, token, change):
    gateway = make_gateway(how="web")
    with web_session(gateway) as web:
        before = web.get("/options.json").json()
        response = web.put("/options", json=change)
        assert response.status_code == 400
        assert "tracegate" in response.text
        after = web.get("/options.json").json()
    name = next(iter(change))
    assert after[name]["value"] == before[name]["value"]
    masked = fetch(gateway, token)
    assert masked.status_code == 200
    assert masked.json()["metadata"]["api_key"] == "[REDACTED:api-key]"


def test_mitmweb_never_holds_client_tokens(make_gateway, token, store):
    gateway = make_gateway(how="web")
    allowed = fetch(gateway, token)
    denied = fetch(gateway, token, "/traces/traces/team-b/tr-b001.json")
    assert (allowed.status_code, denied.status_code) == (200, 403)
    with web_session(gateway) as web:
        flows = web.get("/flows.json").text
        dump = web.get("/flows/dump").content
    assert len(json.loads(flows)) == 2
    signature = token.split(".")[2]
    assert signature not in flows and signature.encode() not in dump
    # Nor the gateway's own signature for the store, which could be replayed against it.
    for secret in ("AWS4-HMAC-SHA256", store.gateway_keys.access_key_id):
        assert secret not in flows and secret.encode() not in dump


def test_mitmweb_event_log_holds_no_signing_material(make_gateway, token):
    gateway = make_gateway(how="web")
    assert fetch(gateway, token).status_code == 200
    with web_session(gateway) as web:
        events = web.get("/events.json").text
    assert "tracegate: loaded" in events  # the log is there, and readable
    for marker in ("CanonicalRequest", "StringToSign", "Signature:", "AWS4-HMAC-SHA256"):
        assert marker not in events


def test_mitmweb_may_still_change_display_options(make_gateway):
    gateway = make_gateway(how="web")
    with web_session(gateway) as web:
        assert web.put("/options", json={"view_filter": "~c 200"}).status_code == 200


def mitmdump_start_up(store, *args: str) -> subprocess.CompletedProcess:
    """Run `mitmdump -s gateway.py` in front of the store with extra arguments; it should exit."""
    return subprocess.run(
        [
            str(BIN / "mitmdump"),
            "-s",
            str(REPO / "addons" / "gateway.py"),
            "--mode",
            f"reverse:{store.endpoint}",
            "--listen-port",
            "0",
            *args,
        ],
        env=gateway_env(store),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "option", ["stream_large_bodies=1k", "ssl_insecure=true", "map_remote=|.*|http://x"]
)
def test_weakening_options_at_start_up_stop_the_gateway(tmp_path, store, issuer, option):
    config = write_config(tmp_path / "c.yaml", store, issuer, tmp_path / "a.sqlite3")
    result = mitmdump_start_up(store, "--set", f"tracegate_config={config}", "--set", option)
    assert result.returncode != 0
    assert "would weaken the gateway" in result.stdout + result.stderr


def test_oversized_store_response_is_a_json_denial_and_audited(make_gateway, token):
    gateway = make_gateway(**{"limits.max_body_bytes": 512})
    response = fetch(gateway, token)
    error = assert_denied_without_data(response, 502, "BodyTooLarge")
    assert "512 bytes" in error["reason"]
    assert audited(gateway, response)[0]["status"] == 502
    # The connection stays usable: the next small request on it is answered.
    with httpx.Client(base_url=gateway.url) as client:
        first = client.get(A_TRACE, headers={"Authorization": f"Bearer {token}"})
        second = client.get("/traces/traces/team-a/nope.json")
    assert first.status_code == 502 and second.status_code == 401


@pytest.fixture(scope="module")
def awkward_objects(store):
    s3 = store.client()
    bomb = gzip.compress(b" " * (40 * 1024 * 1024))
    s3.put_object(
        Bucket="traces",
        Key="traces/team-a/bomb.json",
        Body=bomb,
        ContentType="application/json",
        ContentEncoding="gzip",
    )
    s3.put_object(
        Bucket="traces",
        Key="traces/team-a/zipped.json",
        Body=gzip.compress(b'{"user": {"email": "x@example.com"}}'),
        ContentType="application/json",
        ContentEncoding="gzip",
    )
    s3.put_object(
        Bucket="traces",
        Key="traces/team-a/compressed.json",
        Body=b"\x1f\x9d\x90odd",
        ContentType="application/json",
        ContentEncoding="compress",
    )
    s3.put_object(
        Bucket="traces",
        Key="traces/team-a/broken.json",
        Body=b'{"user": {"email": "' + PLANTED_EMAIL.encode(),
        ContentType="application/json",
    )
    s3.put_object(
        Bucket="traces",
        Key="traces/team-a/broken.jsonl",
        Body=b'{"ok": 1}\n{"user": "' + PLANTED_EMAIL.encode() + b'"\n',
        ContentType="application/x-ndjson",
    )
    return True


@pytest.mark.parametrize(
    ("key", "code", "reason"),
    [
        ("bomb.json", "BodyTooLarge", "exceeds the gateway's limit"),
        ("compressed.json", "UnsupportedContent", "unsupported Content-Encoding"),
        ("broken.json", "UnmaskableContent", "not valid JSON"),
        ("broken.jsonl", "UnmaskableContent", "line 2 is not valid JSON"),
    ],
)
def test_bodies_that_cannot_be_masked_are_refused(
    make_gateway, token, awkward_objects, key, code, reason
):
    gateway = make_gateway(**{"limits.max_body_bytes": "1MiB"})
    response = fetch(gateway, token, f"/traces/traces/team-a/{key}")
    error = assert_denied_without_data(response, 502, code)
    assert reason in error["reason"]
    assert audited(gateway, response)


def test_gzip_objects_are_decoded_masked_and_served_plain(make_gateway, token, awkward_objects):
    gateway = make_gateway()
    response = fetch(gateway, token, "/traces/traces/team-a/zipped.json")
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.json()["user"]["email"].startswith("hmac:")


def raw_request(gateway, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if b"\r\n\r\n" in data and b'"flow_id"' in data:
                break
    return data


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("/traces/traces/team-a/../team-b/tr-b001.json", "'..' segments"),
        ("/traces/traces/team-a/%2e%2e/team-b/tr-b001.json", "'..' segments"),
        ("/traces/traces/team-a//tr-a001.json", "empty segment"),
        ("/traces/traces/team-a/%252e%252e/x.json", "percent-encoded twice"),
        ("http://evil.example/traces/traces/team-a/tr-a001.json", "absolute-form"),
    ],
)
def test_ambiguous_request_targets_are_refused_before_policy(shared_gateway, token, target, reason):
    request = (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    answer = raw_request(shared_gateway, request)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert reason.encode() in answer
    assert PLANTED_EMAIL.encode() not in answer


def test_plaintext_is_refused_on_a_listener_that_requires_tls(make_gateway, token):
    gateway = make_gateway(**{"listen.require_tls": True})
    plain = fetch(gateway, token)
    error = assert_denied_without_data(plain, 400)
    assert "plaintext HTTP is not accepted" in error["reason"]
    tls = httpx.get(
        f"https://127.0.0.1:{gateway.port}{A_TRACE}",
        headers={"Authorization": f"Bearer {token}"},
        verify=False,
        timeout=30,
    )
    assert tls.status_code == 200
    assert tls.json()["metadata"]["api_key"] == "[REDACTED:api-key]"


def test_no_store_response_without_a_config(store):
    # A script loaded without tracegate_config must not proxy anything.
    result = mitmdump_start_up(store)
    assert result.returncode != 0
    assert "tracegate_config" in result.stdout + result.stderr


def test_an_unreachable_store_is_a_502_and_an_audit_row(make_gateway, token):
    from tracegate.demo.store import free_port

    gateway = make_gateway(**{"upstream.endpoint": f"http://127.0.0.1:{free_port()}"})
    response = fetch(gateway, token)
    assert response.status_code == 502
    assert PLANTED_EMAIL not in response.text
    rows = audited(gateway, response)
    assert rows[-1]["decision"] == "error" and rows[-1]["subject"] == "carol@example.com"


def fetch_in_background(gateway, token, path=A_TRACE):
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    return pool.submit(fetch, gateway, token, path)


def test_a_held_request_is_signed_only_after_an_operator_resumes_it(make_gateway, token):
    gateway = make_gateway(how="web")
    with web_session(gateway) as web:
        assert web.put("/options", json={"intercept": "~q", "intercept_active": True}).is_success
        pending = fetch_in_background(gateway, token)
        flow = held_flow(web)
        headers = {name.lower() for name, _ in flow["request"]["headers"]}
        assert not headers & {"authorization", "x-amz-date", "x-tracegate-token"}
        assert web.post(f"/flows/{flow['id']}/resume").is_success
        response = pending.result(timeout=30)
    assert response.status_code == 200
    assert response.json()["metadata"]["api_key"] == "[REDACTED:api-key]"


def test_a_request_edited_while_held_is_refused(make_gateway, token):
    gateway = make_gateway(how="web")
    with web_session(gateway) as web:
        assert web.put("/options", json={"intercept": "~q", "intercept_active": True}).is_success
        pending = fetch_in_background(gateway, token)
        flow = held_flow(web)
        edit = {"request": {"path": "/traces/traces/team-b/tr-b001.json"}}
        assert web.put(f"/flows/{flow['id']}", json=edit).is_success
        assert web.post(f"/flows/{flow['id']}/resume").is_success
        response = pending.result(timeout=30)
    error = assert_denied_without_data(response, 403)
    assert "edited before it was resumed" in error["reason"]


def test_a_held_request_killed_in_mitmweb_gets_a_clear_refusal(make_gateway, token):
    gateway = make_gateway(how="web")
    with web_session(gateway) as web:
        assert web.put("/options", json={"intercept": "~q", "intercept_active": True}).is_success
        pending = fetch_in_background(gateway, token)
        flow = held_flow(web)
        assert web.post(f"/flows/{flow['id']}/kill").is_success
        response = pending.result(timeout=30)
    error = assert_denied_without_data(response, 403)
    assert "killed by an operator" in error["reason"]
    assert audited(gateway, response)[0]["decision"] == "deny"


def test_mitmweb_cannot_swap_the_policy_for_another_file(make_gateway, token, tmp_path):
    import yaml

    gateway = make_gateway(how="web")
    wide = yaml.safe_load(gateway.config.read_text())
    for role in wide["roles"].values():
        for scope in role["scopes"].values():
            scope["masks"] = []
            scope["detectors"] = {"run": [], "reveal_secrets": True}
    other = tmp_path / "wide-open.yaml"
    other.write_text(yaml.safe_dump(wide))
    with web_session(gateway) as web:
        response = web.put("/options", json={"tracegate_config": str(other)})
        assert response.status_code == 400
        assert "can only reload" in response.text
        after = web.get("/options.json").json()
    assert after["tracegate_config"]["value"] == str(gateway.config)
    masked = fetch(gateway, token)
    assert masked.json()["metadata"]["api_key"] == "[REDACTED:api-key]"
    # Reloading the file in force is still possible.
    with web_session(gateway) as web:
        assert web.put("/options", json={"tracegate_config": str(gateway.config)}).is_success
