"""Just-in-time approval, end to end: a real gateway holds requests until a human decides.

Requests go through a real `mitmdump -s` (or mitmweb) to moto S3 with httpx; approvers use the
gateway's approval endpoint with their own tokens, or mitmweb's own API.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.harness import BIN, GatewayProcess, audit_rows, held_flow, web_session
from tracegate.demo.traces import PLANTED_API_KEY, PLANTED_EMAIL

A_TRACE = "/traces/traces/team-a/tr-a001.json"
B_TRACE = "/traces/traces/team-b/tr-b001.json"
RULES = "roles.support.scopes.incident.approvals"


def rules(
    wait: float = 15, grant: float = 60, required: int = 1, pending_seconds: float = 3600, **extra
) -> list[dict]:
    """The example's incident rules with short times for tests."""
    return [
        {
            "id": "incident-other-team",
            "when": {"beyond_scope_prefixes": ["traces/"]},
            "approvers": {"roles": ["security"]},
            "required": 2,
            "wait_seconds": wait,
            "grant_seconds": grant,
        },
        {
            "id": "incident-read",
            "when": {"always": True},
            "approvers": {"roles": ["security"]},
            "required": required,
            "reason_required": True,
            "wait_seconds": wait,
            "pending_seconds": pending_seconds,
            "grant_seconds": grant,
            **extra,
        },
    ]


def fetch(gateway, token, path=A_TRACE, reason="INC-4711 customer data loss", timeout=40, **hdr):
    headers = {"Authorization": f"Bearer {token}", "X-Tracegate-Purpose": "incident", **hdr}
    if reason:
        headers["X-Tracegate-Reason"] = reason
    return httpx.get(gateway.url + path, headers=headers, timeout=timeout)


def in_background(fn, *args, **kwargs) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


def api(gateway, token, method="GET", path="/approvals", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, gateway.admin_url + path, headers=headers, timeout=20, **kwargs)


def wait_pending(gateway, token, count=1, timeout=15.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = api(gateway, token).json()["approvals"]
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} pending approval(s)")


def decide(gateway, token, approval_id, verb="approve", comment=""):
    return api(
        gateway, token, "POST", f"/approvals/{approval_id}/{verb}", json={"comment": comment}
    )


def events(gateway, approval_id) -> list[dict]:
    conn = sqlite3.connect(audit_path(gateway))
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute(
            "SELECT * FROM approval_events WHERE approval_id = ? ORDER BY id", (approval_id,)
        )
        return [dict(r) for r in rows]
    finally:
        conn.close()


def audit_path(gateway):
    import yaml

    return yaml.safe_load(gateway.config.read_text())["audit"]["path"]


def flow_row(gateway, response) -> dict:
    flow_id = response.headers["x-tracegate-flow"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = audit_rows(audit_path(gateway), flow_id=flow_id)
        if rows:
            return rows[0]
        time.sleep(0.05)
    raise AssertionError(f"no audit row for {flow_id}")


def error_of(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert PLANTED_EMAIL not in response.text and PLANTED_API_KEY not in response.text
    return error


# -- held, then decided ------------------------------------------------------------------


def test_held_request_approved_via_the_endpoint_delivers_the_masked_trace(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules()})
    pending = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    assert not pending.done()  # the client is still waiting
    assert approval["requester"]["subject"] == "alice@example.com"
    assert approval["purpose"] == "incident" and approval["reason"].startswith("INC-4711")
    assert approval["request"]["resource"].endswith("team-a/tr-a001.json")
    assert PLANTED_EMAIL not in json.dumps(approval)  # a summary, never the data

    assert decide(gateway, tokens["sec1"], approval["id"], comment="ok for INC").is_success
    response = pending.result(timeout=30)
    assert response.status_code == 200
    assert response.headers["x-tracegate-approval"] == approval["id"]
    trace = response.json()
    assert trace["messages"], "the approved purpose sees conversations"
    assert PLANTED_API_KEY not in response.text  # secrets stay redacted after approval

    row = flow_row(gateway, response)
    recorded = json.loads(row["approval"])
    assert recorded == {
        "id": approval["id"],
        "rule": "incident-read",
        "status": "approved",
        "how": "endpoint",
        "by": ["sec1@example.com"],
    }
    kinds = [(e["event"], e["actor"], e["how"]) for e in events(gateway, approval["id"])]
    assert kinds[0] == ("requested", "alice@example.com", "request")
    assert ("approved", "sec1@example.com", "endpoint") in kinds
    assert events(gateway, approval["id"])[0]["flow_id"] == row["flow_id"]


def test_a_hold_longer_than_the_upstream_timeout_is_not_cut_off(make_gateway, tokens):
    # The idle timeout (mitmproxy's tcp_timeout) is for a silent store; mitmproxy disarms it
    # while a hook runs, so a request waiting for its approver is never closed by it.
    gateway = make_gateway(**{RULES: rules(), "limits.upstream_timeout_seconds": 1})
    pending = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    time.sleep(2.5)
    assert not pending.done()
    assert decide(gateway, tokens["sec1"], approval["id"]).is_success
    assert pending.result(timeout=30).status_code == 200


def test_denied_request_gets_403_with_the_approvers_reason(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules()})
    pending = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    assert decide(gateway, tokens["sec1"], approval["id"], "deny", "no incident open").is_success
    error = error_of(pending.result(timeout=30), 403, "ApprovalDenied")
    assert "sec1@example.com" in error["reason"] and "no incident open" in error["reason"]
    assert error["approval_id"] == approval["id"]
    assert [e["event"] for e in events(gateway, approval["id"])][-1] == "denied"


def test_timeout_answers_pending_with_the_id_and_a_retry_joins_the_same_approval(
    make_gateway, tokens
):
    gateway = make_gateway(**{RULES: rules(wait=1)})
    started = time.monotonic()
    response = fetch(gateway, tokens["alice"])
    assert time.monotonic() - started < 10
    error = error_of(response, 403, "ApprovalPending")
    approval_id = error["approval_id"]
    assert response.headers["x-tracegate-approval"] == approval_id
    assert approval_id in error["reason"] and error["approval_url"].endswith(approval_id)
    [still] = wait_pending(gateway, tokens["sec1"])
    assert still["id"] == approval_id  # the approval outlives the client's wait

    again = fetch(gateway, tokens["alice"])
    assert error_of(again, 403, "ApprovalPending")["approval_id"] == approval_id
    assert [e["event"] for e in events(gateway, approval_id)] == [
        "requested",
        "wait_timeout",
        "joined",
        "wait_timeout",
    ]
    assert decide(gateway, tokens["sec1"], approval_id).is_success
    assert fetch(gateway, tokens["alice"]).status_code == 200  # now through the grant


def test_a_requester_can_never_approve_their_own_request(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules()})
    pending = in_background(fetch, gateway, tokens["dual"], **{"X-Tracegate-Role": "support"})
    [approval] = wait_pending(gateway, tokens["sec1"])
    refused = decide(gateway, tokens["dual"], approval["id"])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "SelfApproval"
    assert not pending.done()
    assert decide(gateway, tokens["sec1"], approval["id"]).is_success
    assert pending.result(timeout=30).status_code == 200
    refusals = [e for e in events(gateway, approval["id"]) if e["event"] == "refused"]
    assert refusals[0]["actor"] == "dana@example.com" and "SelfApproval" in refusals[0]["detail"]


def test_an_approver_without_the_role_is_refused(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules(wait=5)})
    pending = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    assert api(gateway, tokens["analyst"]).json() == {"approvals": []}  # not theirs to see
    refused = decide(gateway, tokens["analyst"], approval["id"])
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "NotAnApprover"
    assert "role security" in refused.json()["error"]["reason"]
    no_token = api(gateway, None)
    assert no_token.status_code == 401
    forged = decide(gateway, tokens["sec1"][:-4] + "AAAA", approval["id"])
    assert forged.status_code == 401
    error_of(pending.result(timeout=30), 403, "ApprovalPending")  # nobody real approved


def test_a_reason_is_required_when_the_rule_says_so(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules()})
    error = error_of(fetch(gateway, tokens["alice"], reason=None), 403, "ReasonRequired")
    assert "X-Tracegate-Reason" in error["reason"]
    assert api(gateway, tokens["sec1"]).json() == {"approvals": []}


def test_beyond_scope_needs_two_distinct_approvers_and_is_refused_without_a_rule(
    make_gateway, tokens
):
    gateway = make_gateway(**{RULES: rules()})
    # The debugging purpose has no approval rules: another team's trace is simply refused.
    plain = httpx.get(
        gateway.url + B_TRACE, headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=20
    )
    assert plain.status_code == 403 and "outside the scope" in plain.json()["error"]["reason"]

    pending = in_background(fetch, gateway, tokens["alice"], B_TRACE)
    [approval] = wait_pending(gateway, tokens["sec1"])
    assert approval["rule_id"] == "incident-other-team" and approval["required"] == 2
    first = decide(gateway, tokens["sec1"], approval["id"])
    assert first.json()["approval"]["status"] == "pending"
    again = decide(gateway, tokens["sec1"], approval["id"])
    assert again.status_code == 409  # the same approver cannot count twice
    time.sleep(0.5)
    assert not pending.done()
    assert decide(gateway, tokens["sec2"], approval["id"]).json()["approval"]["status"] == (
        "approved"
    )
    response = pending.result(timeout=30)
    assert response.status_code == 200 and response.json()["team"] == "team-b"


def test_a_grant_lets_the_same_request_repeat_within_its_window_only(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules(wait=1, grant=3)})
    pending = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    decide(gateway, tokens["sec1"], approval["id"])
    assert pending.result(timeout=30).status_code == 200

    started = time.monotonic()
    repeat = fetch(gateway, tokens["alice"])
    assert repeat.status_code == 200 and time.monotonic() - started < 1
    assert json.loads(flow_row(gateway, repeat)["approval"])["how"] == "grant"
    assert "grant_used" in [e["event"] for e in events(gateway, approval["id"])]
    # A different request (another key) is not covered by the grant.
    other = fetch(gateway, tokens["alice"], "/traces/traces/team-a/tr-a002.json")
    assert error_of(other, 403, "ApprovalPending")["approval_id"] != approval["id"]
    # Nor is the same request by someone else... (bob has no incident purpose at all)
    time.sleep(3.2)
    expired = fetch(gateway, tokens["alice"])
    assert error_of(expired, 403, "ApprovalPending")["approval_id"] != approval["id"]


def test_a_pending_approval_survives_a_restart_and_its_grant_serves_the_retry(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules(wait=1)})
    approval_id = error_of(fetch(gateway, tokens["alice"]), 403, "ApprovalPending")["approval_id"]
    gateway.stop()
    restarted = GatewayProcess(
        config=gateway.config,
        env=gateway.env,
        workdir=gateway.workdir,
        upstream=gateway.upstream,
    ).start()
    try:
        [still] = wait_pending(restarted, tokens["sec1"])
        assert still["id"] == approval_id
        assert decide(restarted, tokens["sec1"], approval_id).is_success
        response = fetch(restarted, tokens["alice"])
        assert response.status_code == 200
        assert response.headers["x-tracegate-approval"] == approval_id
    finally:
        restarted.stop()


def test_a_client_that_disconnects_cancels_its_pending_approval(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules(wait=30)})
    with pytest.raises(httpx.ReadTimeout):
        fetch(gateway, tokens["alice"], timeout=1.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cancelled = api(gateway, tokens["sec1"], params={"status": "cancelled"}).json()
        if cancelled["approvals"]:
            break
        time.sleep(0.1)
    [approval] = cancelled["approvals"]
    assert approval["decision_comment"] == "client disconnected"
    assert api(gateway, tokens["sec1"]).json() == {"approvals": []}
    late = decide(gateway, tokens["sec1"], approval["id"])
    assert late.status_code == 409  # nobody can approve it any more: no stray grant


def test_other_flows_keep_flowing_while_twenty_requests_are_held(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules(wait=60)})
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=20)
    held = [
        pool.submit(
            fetch,
            gateway,
            tokens["alice"],
            f"/traces/traces/team-a/tr-a00{1 + n % 3}.json",
            reason=f"INC-{n}",
        )
        for n in range(20)
    ]
    # Three distinct requests: retries of the same request join its approval.
    approvals = wait_pending(gateway, tokens["sec1"], count=3)
    time.sleep(0.5)
    assert len(api(gateway, tokens["sec1"]).json()["approvals"]) == 3  # one per distinct request
    metrics = httpx.get(gateway.admin_url + "/metrics", timeout=10).text
    assert "tracegate_approvals_pending 3.0" in metrics
    normal = httpx.Client(timeout=10)
    started = time.monotonic()
    for _ in range(20):
        response = normal.get(
            gateway.url + A_TRACE, headers={"Authorization": f"Bearer {tokens['alice']}"}
        )
        assert response.status_code == 200
    assert time.monotonic() - started < 10
    assert not any(f.done() for f in held)
    for approval in approvals:
        decide(gateway, tokens["sec1"], approval["id"])
    assert [f.result(timeout=30).status_code for f in held] == [200] * 20
    pool.shutdown()


# -- response conditions -----------------------------------------------------------------


def test_a_response_in_which_a_secret_was_found_is_held_then_released_masked(make_gateway, tokens):
    response_rule = {
        "id": "secret-in-answer",
        "when": {"detectors": ["secrets"]},
        "approvers": {"groups": ["security-leads"]},
        "wait_seconds": 15,
    }
    gateway = make_gateway(**{RULES: [response_rule]})
    pending = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    assert approval["phase"] == "response" and "secret_assignment" in approval["why"]
    decide(gateway, tokens["sec1"], approval["id"])
    response = pending.result(timeout=30)
    assert response.status_code == 200 and PLANTED_API_KEY not in response.text
    # A trace without secrets is not held at all.
    clean = fetch(gateway, tokens["alice"], "/traces/traces/team-a/otel/span-0001.json")
    assert clean.status_code == 200 and "x-tracegate-approval" not in clean.headers


# -- mitmweb ------------------------------------------------------------------------------


def test_resume_in_mitmweb_approves_and_is_recorded_as_the_unauthenticated_operator(
    make_gateway, tokens
):
    gateway = make_gateway(how="web", **{RULES: rules()})
    with web_session(gateway) as web:
        pending = in_background(fetch, gateway, tokens["alice"])
        flow = held_flow(web)
        assert "HELD for approval apv_" in flow["comment"]
        assert "alice@example.com" in flow["comment"] and "INC-4711" in flow["comment"]
        assert web.post(f"/flows/{flow['id']}/resume").is_success
        response = pending.result(timeout=30)
    assert response.status_code == 200
    recorded = json.loads(flow_row(gateway, response)["approval"])
    assert recorded["how"] == "mitmweb" and recorded["by"] == ["mitmweb-operator"]
    approved = [e for e in events(gateway, recorded["id"]) if e["event"] == "approved"]
    assert approved[0]["how"] == "mitmweb"
    assert json.loads(approved[0]["detail"])["authenticated"] is False


def test_kill_in_mitmweb_denies_and_releases_the_client(make_gateway, tokens):
    gateway = make_gateway(how="web", **{RULES: rules()})
    with web_session(gateway) as web:
        pending = in_background(fetch, gateway, tokens["alice"])
        flow = held_flow(web)
        assert web.post(f"/flows/{flow['id']}/kill").is_success
        started = time.monotonic()
        error = error_of(pending.result(timeout=30), 403, "ApprovalDenied")
        assert time.monotonic() - started < 5
    assert "denied by mitmweb-operator via mitmweb" in error["reason"]
    denied = api(gateway, tokens["sec1"], params={"status": "denied"}).json()["approvals"]
    assert denied[0]["decision_how"] == "mitmweb"


def test_a_held_request_edited_in_mitmweb_before_resume_is_denied(make_gateway, tokens):
    gateway = make_gateway(how="web", **{RULES: rules()})
    with web_session(gateway) as web:
        pending = in_background(fetch, gateway, tokens["alice"])
        flow = held_flow(web)
        edit = {"request": {"path": "/traces/traces/team-b/tr-b001.json"}}
        assert web.put(f"/flows/{flow['id']}", json=edit).is_success
        assert web.post(f"/flows/{flow['id']}/resume").is_success
        error = error_of(pending.result(timeout=30), 403, "AccessDenied")
    assert "edited before it was resumed" in error["reason"]
    denied = api(gateway, tokens["sec1"], params={"status": "denied"}).json()["approvals"]
    assert denied[0]["grant_until"] is None  # an edited request grants nothing


def test_ui_resume_can_be_refused_so_only_the_endpoint_approves(make_gateway, tokens):
    gateway = make_gateway(how="web", **{RULES: rules(), "approvals.ui_resume": "refuse"})
    with web_session(gateway) as web:
        pending = in_background(fetch, gateway, tokens["alice"])
        flow = held_flow(web)
        assert web.post(f"/flows/{flow['id']}/resume").is_success
        error = error_of(pending.result(timeout=30), 403, "ApprovalRequired")
    assert error["approval_status"] == "pending"


# -- notifications ------------------------------------------------------------------------


class Hook:
    """A local webhook receiver that records each JSON post (or fails on purpose)."""

    def __init__(self, status: int = 200) -> None:
        self.posts: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["content-length"])
                owner.posts.append(json.loads(self.rfile.read(length)))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.posts) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.posts

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_announces_each_approval_and_decision_without_data(make_gateway, tokens):
    hook = Hook()
    try:
        gateway = make_gateway(**{RULES: rules(), "approvals.webhook_url": hook.url})
        pending = in_background(fetch, gateway, tokens["alice"])
        [approval] = wait_pending(gateway, tokens["sec1"])
        decide(gateway, tokens["sec1"], approval["id"])
        assert pending.result(timeout=30).status_code == 200
        posts = hook.wait(2)
    finally:
        hook.stop()
    assert [p["tracegate"]["event"] for p in posts] == ["requested", "approved"]
    assert approval["id"] in posts[0]["text"] and "alice@example.com" in posts[0]["text"]
    assert posts[0]["tracegate"]["link"] == f"{gateway.admin_url}/approvals/{approval['id']}"
    assert posts[0]["blocks"][0]["type"] == "section"  # Slack's block layout
    assert PLANTED_EMAIL not in json.dumps(posts)


HOSTILE_REASON = (
    "INC-1 <https://evil.example/approve?id=1|Approve> <!channel> @here @channel "
    "*urgent* `code` see https://evil.example/x & www.evil.example\tfake: APPROVED by sec1"
)


def test_requester_text_reaches_slack_and_mitmweb_without_links_mentions_or_lines(
    make_gateway, tokens
):
    hook = Hook()
    try:
        gateway = make_gateway(**{RULES: rules(), "approvals.webhook_url": hook.url})
        pending = in_background(fetch, gateway, tokens["alice"], reason=HOSTILE_REASON)
        [approval] = wait_pending(gateway, tokens["sec1"])
        decide(gateway, tokens["sec1"], approval["id"], "deny")
        pending.result(timeout=30)
        [post, *_] = hook.wait(2)
    finally:
        hook.stop()
    text = post["blocks"][0]["text"]["text"]
    links = re.findall(r"<([^>]*)>", text)  # Slack renders only <...> as links or mentions
    assert links == [f"{gateway.admin_url}/approvals/{approval['id']}|{approval['id']}"]
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    assert "@here" not in text and "@channel" not in text  # broken by a word joiner
    assert "https://evil" not in text and "www.evil" not in text
    assert "*urgent*" not in text and "\t" not in text
    assert "INC-1" in text  # still readable


def test_mitmweb_comment_holds_requester_text_on_one_line():
    from tracegate.approvals import display

    assert display.plain("a\nfake: APPROVED\r\x1b[2J\u202eevil") == "a fake: APPROVED [2J evil"
    assert len(display.plain("x" * 1000)) == display.MAX_TEXT


@pytest.mark.parametrize("broken", ["refusing", "unreachable"])
def test_a_failing_webhook_never_blocks_or_fails_the_request(make_gateway, tokens, broken):
    from tracegate.demo.store import free_port

    hook = Hook(status=500)
    url = hook.url if broken == "refusing" else f"http://127.0.0.1:{free_port()}/hook"
    try:
        gateway = make_gateway(**{RULES: rules(), "approvals.webhook_url": url})
        pending = in_background(fetch, gateway, tokens["alice"])
        [approval] = wait_pending(gateway, tokens["sec1"])
        decide(gateway, tokens["sec1"], approval["id"])
        assert pending.result(timeout=30).status_code == 200
    finally:
        hook.stop()
    assert "approval webhook failed" in gateway.log()


# -- the command ---------------------------------------------------------------------------


def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEGATE_")}
    if token:
        env["TRACEGATE_TOKEN"] = token
    return subprocess.run(
        [str(BIN / "tracegate"), "approvals", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


def test_the_approvals_command_lists_shows_approves_and_denies(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules()})
    first = in_background(fetch, gateway, tokens["alice"])
    second = in_background(fetch, gateway, tokens["alice"], "/traces/traces/team-a/tr-a002.json")
    wait_pending(gateway, tokens["sec1"], count=2)
    url = ["--url", gateway.admin_url]

    listed = cli("list", *url, token=tokens["sec1"])
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stdout.splitlines() if line.startswith("apv_")]
    assert len(lines) == 2 and all("alice@example.com" in line for line in lines)
    first_id = next(line.split()[0] for line in lines if "tr-a001" in line)
    second_id = next(line.split()[0] for line in lines if "tr-a002" in line)

    shown = cli("show", first_id, *url, "--json", token=tokens["sec1"])
    assert json.loads(shown.stdout)["approval"]["id"] == first_id

    approved = cli("approve", first_id, *url, "--comment", "INC ok", token=tokens["sec1"])
    assert approved.returncode == 0 and "approved" in approved.stdout
    denied = cli("deny", second_id, *url, "--comment", "not needed", token=tokens["sec1"])
    assert denied.returncode == 0 and "denied" in denied.stdout
    assert first.result(timeout=30).status_code == 200
    assert second.result(timeout=30).status_code == 403

    refused = cli("approve", first_id, *url, token=tokens["analyst"])
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "NotAnApprover" in refused.stderr
    no_token = cli("list", *url)
    assert no_token.returncode == 2 and "TRACEGATE_TOKEN" in no_token.stderr
    unreachable = cli("list", "--url", "http://127.0.0.1:9", token=tokens["sec1"])
    assert unreachable.returncode == 1 and "Traceback" not in unreachable.stderr


def test_approval_events_are_in_the_log_and_verify_finds_an_edited_one(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules()})
    pending = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    decide(gateway, tokens["sec1"], approval["id"])
    assert pending.result(timeout=30).status_code == 200
    gateway.stop()
    database = audit_path(gateway)
    verify = [str(BIN / "tracegate"), "audit", "verify", database]
    ok = subprocess.run(verify, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "2 approval events" in ok.stdout, ok.stdout + ok.stderr

    conn = sqlite3.connect(database)
    conn.execute("UPDATE approval_events SET actor = 'mallory' WHERE event = 'approved'")
    conn.commit()
    conn.close()
    broken = subprocess.run(verify, capture_output=True, text=True, timeout=30)
    assert broken.returncode == 1
    assert "(approval event 2): its row does not match its leaf (edited)" in broken.stderr


def test_an_undecided_approval_expires_and_is_announced(make_gateway, tokens):
    hook = Hook()
    try:
        expiring = rules(wait=1, pending_seconds=2)
        gateway = make_gateway(**{RULES: expiring, "approvals.webhook_url": hook.url})
        approval_id = error_of(fetch(gateway, tokens["alice"]), 403, "ApprovalPending")[
            "approval_id"
        ]
        time.sleep(2.2)
        expired = api(gateway, tokens["sec1"], params={"status": "expired"}).json()["approvals"]
        assert [a["id"] for a in expired] == [approval_id]
        assert decide(gateway, tokens["sec1"], approval_id).status_code == 409
        posts = hook.wait(2, timeout=10)
    finally:
        hook.stop()
    assert [p["tracegate"]["event"] for p in posts] == ["requested", "expired"]
    assert "expired" in [e["event"] for e in events(gateway, approval_id)]
    # The same request now opens a new approval.
    again = error_of(fetch(gateway, tokens["alice"]), 403, "ApprovalPending")
    assert again["approval_id"] != approval_id


def refuse_writes(gateway, table: str = "approvals") -> sqlite3.Connection:
    """Make every write to the approvals table fail, as a full or broken disk would."""
    conn = sqlite3.connect(audit_path(gateway))
    conn.execute(
        f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'injected write failure'); END"
    )
    conn.commit()
    return conn


def test_an_approval_that_cannot_be_recorded_is_a_503_and_never_a_release(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules()})
    api(gateway, tokens["sec1"])  # the tables exist once the gateway runs
    conn = refuse_writes(gateway)
    try:
        error = error_of(fetch(gateway, tokens["alice"]), 503, "ApprovalUnavailable")
        assert "could not be recorded" in error["reason"]
    finally:
        conn.close()
    [row] = [r for r in audit_rows(audit_path(gateway)) if r["status"] == 503]
    assert row["decision"] == "deny"


def test_a_decision_that_cannot_be_recorded_leaves_the_request_held(make_gateway, tokens):
    gateway = make_gateway(**{RULES: rules(wait=20)})
    pending = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    conn = refuse_writes(gateway)
    failed = decide(gateway, tokens["sec1"], approval["id"])
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "ApprovalUnavailable"
    time.sleep(0.5)
    assert not pending.done()  # nothing was approved, so nothing was released
    conn.execute("DROP TRIGGER refuse_approvals")
    conn.commit()
    conn.close()
    assert decide(gateway, tokens["sec1"], approval["id"]).is_success
    assert pending.result(timeout=30).status_code == 200
