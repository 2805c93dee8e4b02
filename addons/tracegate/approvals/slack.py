"""Deciding approvals from Slack: the Approve / Deny buttons of the webhook's message, and the
signed interaction callback Slack sends when one is clicked.

Slack signs each callback: `X-Slack-Signature` is `v0=` and the hex HMAC-SHA256, keyed with the
app's signing secret, of `v0:<X-Slack-Request-Timestamp>:<raw body>`. A callback is taken only
if that holds (compared in constant time), its timestamp is within five minutes, and its
signature was not seen before (one use, like a SAML assertion); the clicking Slack user must
map to an identity in the config, and then the approval store's rules apply as for anyone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from tracegate.approvals.store import Actor
from tracegate.config import GatewayConfig
from tracegate.identity.principal import Principal
from tracegate.policy import roles_of

MAX_AGE_SECONDS = 300
APPROVE, DENY = "tracegate_approve", "tracegate_deny"


class SlackRefused(Exception):
    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


def signature(secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def check_signature(secret: str, timestamp: str, body: bytes, given: str, now: float) -> None:
    """SlackRefused unless Slack signed this body just now."""
    if not given or not timestamp:
        raise SlackRefused(401, "SlackUnsigned", "the callback carries no Slack signature")
    try:
        age = abs(now - int(timestamp))
    except ValueError:
        raise SlackRefused(401, "SlackStale", "the callback's timestamp is not a number") from None
    if age > MAX_AGE_SECONDS:
        raise SlackRefused(401, "SlackStale", "the callback is more than 5 minutes old")
    if not hmac.compare_digest(signature(secret, timestamp, body), given):
        raise SlackRefused(401, "SlackBadSignature", "the Slack signature does not match")


@dataclass(frozen=True)
class SlackDecision:
    user_id: str
    approval_id: str
    approve: bool


def decision_in(body: bytes) -> SlackDecision:
    """The button a user clicked, from the form-encoded `payload` of a block_actions callback."""
    try:
        payload: dict[str, Any] = json.loads(parse_qs(body.decode())["payload"][0])
        action = payload["actions"][0]
        user_id = str(payload["user"]["id"])
    except (KeyError, IndexError, ValueError, TypeError):
        raise SlackRefused(400, "SlackInvalid", "not a Slack block_actions callback") from None
    if action.get("action_id") not in (APPROVE, DENY):
        raise SlackRefused(400, "SlackInvalid", "not a tracegate button")
    return SlackDecision(user_id, str(action.get("value", "")), action["action_id"] == APPROVE)


def actor_for(user_id: str, config: GatewayConfig) -> Actor:
    """Who a Slack user decides as, per `approvals.slack.users`; SlackRefused if unknown."""
    user = config.approvals.slack.users.get(user_id)
    if user is None:
        raise SlackRefused(403, "SlackUnknownUser", f"Slack user {user_id} maps to no identity")
    issuer = user.issuer or config.identity.providers[0].issuer
    principal = Principal(user.subject, issuer, "slack", tuple(user.groups),
                          claims={"groups": list(user.groups), "sub": user.subject})  # fmt: skip
    return Actor(user.subject, issuer, tuple(roles_of(principal, config)), tuple(user.groups))


def buttons(approval_id: str) -> dict[str, Any]:
    """The actions block the webhook's message gains when Slack decisions are on."""
    return {
        "type": "actions",
        "block_id": f"tracegate-{approval_id}",
        "elements": [
            {"type": "button", "action_id": APPROVE, "value": approval_id, "style": "primary",
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": DENY, "value": approval_id, "style": "danger",
             "text": {"type": "plain_text", "text": "Deny"}},
        ],
    }  # fmt: skip
