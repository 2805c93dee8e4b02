"""Approvals decided from Slack: the webhook's message carries Approve / Deny buttons, and a
local sender plays Slack, signing each interaction callback with the app's signing secret."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import httpx
import pytest

from tests.harness import audit_rows, gateway_env
from tests.test_approvals import (
    PLANTED_API_KEY,
    RULES,
    Hook,
    audit_path,
    error_of,
    events,
    fetch,
    in_background,
    rules,
    wait_pending,
)
from tracegate.approvals.slack import APPROVE, DENY, signature

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # a made-up signing secret, for these tests only
USERS = {
    "U0SEC1": {"subject": "sec1@example.com", "groups": ["security-leads"]},
    "U0DANA": {"subject": "dana@example.com", "groups": ["support-engineers", "security-leads"]},
}


@pytest.fixture
def hook():
    receiver = Hook()
    yield receiver
    receiver.stop()


@pytest.fixture
def slack_gateway(make_gateway, store, hook):
    return make_gateway(
        how="run",
        env=gateway_env(store, TRACEGATE_SLACK_SIGNING_SECRET=SECRET),
        **{
            RULES: rules(wait=30),
            "approvals.webhook_url": hook.url,
            "approvals.slack": {"enabled": True, "users": USERS},
        },
    )


def click(
    gateway, user: str, approval_id: str, action: str = APPROVE, *, secret: str = SECRET,
    age: float = 0, signed: bool = True, body: bytes | None = None, headers: dict | None = None,
) -> httpx.Response:  # fmt: skip
    """What Slack sends when `user` clicks a button: a signed block_actions callback."""
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "actions": [{"action_id": action, "value": approval_id, "type": "button"}],
    }
    body = body or urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time() - age))
    sent = {"Content-Type": "application/x-www-form-urlencoded"}
    if signed:
        sent["X-Slack-Request-Timestamp"] = timestamp
        sent["X-Slack-Signature"] = signature(secret, timestamp, body)
    sent.update(headers or {})
    return httpx.post(
        gateway.admin_url + "/slack/interactions", content=body, headers=sent, timeout=20
    )


def test_approve_and_deny_from_slack_buttons(slack_gateway, hook, tokens):
    gateway = slack_gateway
    waiting = in_background(fetch, gateway, tokens["alice"])
    [approval] = wait_pending(gateway, tokens["sec1"])
    [announced] = hook.wait(1)
    actions = [b for b in announced["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions[0]["elements"]] == [APPROVE, DENY]
    assert {e["value"] for e in actions[0]["elements"]} == {approval["id"]}
    answer = click(gateway, "U0SEC1", approval["id"])
    assert answer.status_code == 200, answer.text
    assert "sec1@example.com approved" in answer.json()["text"]
    response = waiting.result(timeout=30)
    assert response.status_code == 200 and PLANTED_API_KEY not in response.text
    approved = [e for e in events(gateway, approval["id"]) if e["event"] == "approved"]
    assert approved and approved[0]["how"] == "slack" and approved[0]["actor"] == "sec1@example.com"
    # Deny, for a second request.
    denied = in_background(
        fetch, gateway, tokens["alice"], path="/traces/traces/team-a/tr-a002.json"
    )
    second = next(a for a in wait_pending(gateway, tokens["sec1"]) if a["id"] != approval["id"])
    assert click(gateway, "U0SEC1", second["id"], DENY).status_code == 200
    error_of(denied.result(timeout=30), 403, "ApprovalDenied")


def test_forged_stale_unknown_replayed_and_self_approving_callbacks_are_refused_and_audited(
    slack_gateway, tokens
):
    gateway = slack_gateway
    waiting = in_background(fetch, gateway, tokens["dual"], **{"X-Tracegate-Role": "support"})
    [approval] = wait_pending(gateway, tokens["sec1"])
    refusals = {
        "SlackBadSignature": click(gateway, "U0SEC1", approval["id"], secret="not-the-secret"),
        "SlackStale": click(gateway, "U0SEC1", approval["id"], age=301),
        "SlackUnsigned": click(gateway, "U0SEC1", approval["id"], signed=False),
        "SlackUnknownUser": click(gateway, "U0NOBODY", approval["id"]),
        "SelfApproval": click(gateway, "U0DANA", approval["id"]),  # Dana's own request
    }
    for code, answer in refusals.items():
        assert answer.json().get("error", {}).get("code") == code, (code, answer.text)
        assert answer.status_code in (401, 403)
    # A genuine callback is taken once; the same bytes again are a replay.
    body = urlencode({"payload": json.dumps({
        "type": "block_actions", "user": {"id": "U0SEC1"},
        "actions": [{"action_id": DENY, "value": approval["id"]}]})}).encode()  # fmt: skip
    timestamp = str(int(time.time()))
    headers = {"X-Slack-Request-Timestamp": timestamp,
               "X-Slack-Signature": signature(SECRET, timestamp, body)}  # fmt: skip
    first = click(gateway, "U0SEC1", approval["id"], body=body, signed=False, headers=headers)
    again = click(gateway, "U0SEC1", approval["id"], body=body, signed=False, headers=headers)
    assert first.status_code == 200, first.text
    assert again.status_code == 401 and again.json()["error"]["code"] == "SlackReplay"
    error_of(waiting.result(timeout=30), 403, "ApprovalDenied")
    time.sleep(0.5)
    codes = {
        r["code"] for r in audit_rows(audit_path(gateway)) if r["path"] == "/slack/interactions"
    }
    assert {*refusals, "SlackReplay"} <= codes
