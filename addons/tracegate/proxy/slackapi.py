"""POST /slack/interactions on the admin listener: a click on Approve or Deny in Slack.

Thin: the checks are `approvals.slack` (signature, age, the clicking user's identity), a
callback's signature is used once (the gateway's ledger: shared by replicas on PostgreSQL),
and the decision goes through the approval store under the usual rules, recorded `how: slack`.
Every refusal is answered with its reason and audited.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from tracegate.approvals import ApprovalError
from tracegate.approvals.slack import SlackRefused, actor_for, check_signature, decision_in
from tracegate.configbase import read_secret
from tracegate.exchange import IncomingRequest
from tracegate.identity.principal import Principal
from tracegate.identity.replay import LedgerUnavailable
from tracegate.proxy.adminrecord import record_admin_flow
from tracegate.proxy.jsonhandler import JsonHandler
from tracegate.proxy.runtime import Runtime

REPLAY_KEEP_SECONDS = 600  # longer than a callback may be old


class SlackInteractions(JsonHandler):
    def initialize(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def post(self) -> None:
        config, gateway, desk = self.runtime.config, self.runtime.gateway, self.runtime.approvals
        if config is None or gateway is None or desk is None or not config.approvals.slack.enabled:
            return self.write_json(404, {"error": {"reason": "Slack decisions are not enabled"}})
        slack = config.approvals.slack
        body = self.request.body
        principal: Principal | None = None
        try:
            secret = (
                read_secret("approvals.slack.signing_secret_file", file=slack.signing_secret_file)
                if slack.signing_secret_file
                else read_secret("approvals.slack.signing_secret_env", env=slack.signing_secret_env)
            )
            now = time.time()
            given = self.request.headers.get("X-Slack-Signature", "")
            timestamp = self.request.headers.get("X-Slack-Request-Timestamp", "")
            check_signature(secret, timestamp, body, given, now)
            seen = "slack:" + hashlib.sha256(f"{timestamp}:{given}".encode()).hexdigest()
            try:
                fresh = await asyncio.to_thread(
                    gateway.ledger.record, seen, now + REPLAY_KEEP_SECONDS, now
                )
            except LedgerUnavailable as exc:
                raise SlackRefused(
                    503, "SlackUnavailable", f"cannot record the callback: {exc}"
                ) from None
            if not fresh:
                raise SlackRefused(401, "SlackReplay", "this callback was already used")
            decision = decision_in(body)
            actor = actor_for(decision.user_id, config)
            principal = Principal(actor.subject, actor.issuer, "slack", actor.groups)
            try:
                approval = await desk.store.decide(
                    decision.approval_id, actor, decision.approve, "slack", ""
                )
            except ApprovalError as error:
                if error.status != 404:
                    await desk.store.refused(decision.approval_id, actor, error)
                raise SlackRefused(error.status, error.code, error.reason) from None
        except SlackRefused as refused:
            await self._audit(principal, "deny", f"Slack callback refused: {refused.reason}",
                              refused.status, refused.code)  # fmt: skip
            return self.write_json(
                refused.status,
                {"error": {"code": refused.code, "reason": refused.reason}, "text": refused.reason},
            )
        verb = "approved" if decision.approve else "denied"
        await self._audit(principal, "allow", f"Slack: {approval.id} {verb}", 200)
        if approval.status != "pending":
            desk.webhook.post(approval.status, approval, desk.link(approval.id))
        text = f"{actor.subject} {verb} {approval.id} (now {approval.status})"
        self.write_json(200, {"replace_original": False, "text": text})

    async def _audit(
        self, principal: Principal | None, decision: str, reason: str, status: int,
        code: str | None = None,
    ) -> None:  # fmt: skip
        request = IncomingRequest(
            "POST", "/slack/interactions", client=self.request.remote_ip or ""
        )
        await record_admin_flow(
            self.runtime, request, principal, decision, reason, status, code, "slack"
        )


def routes(runtime: Runtime) -> list[tuple[str, type, dict[str, Any]]]:
    return [(r"/slack/interactions", SlackInteractions, {"runtime": runtime})]
