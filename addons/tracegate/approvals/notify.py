"""Slack-compatible webhook posts for new approvals and decisions.

Posting never blocks or fails a request: each post is a background task with a timeout, and a
failure is logged and counted, nothing more.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from tracegate.approvals import display, slack
from tracegate.approvals.model import Approval

logger = logging.getLogger(__name__)


def message(event: str, approval: Approval, link: str, buttons: bool = False) -> dict[str, Any]:
    """Slack's incoming-webhook shape (`text` plus blocks); never any trace data. Everything a
    requester or an identity provider chose is escaped for mrkdwn; only our link is a link."""
    who = display.slack(approval.requester_subject)
    what = display.slack(approval.request_summary_line())
    if event == "requested":
        reason = display.slack(approval.reason) if approval.reason else "(none)"
        text = (
            f"Approval {approval.id} needed: {who} asks for {what} as "
            f"{approval.role}/{approval.purpose}. Why held: {display.slack(approval.why)}. "
            f"Reason given: {reason}. Decide: <{link}|{approval.id}>"
        )
    else:
        by = display.slack(approval.decided_by or "tracegate")
        how = f" via {approval.decision_how}" if approval.decision_how else ""
        text = f"Approval {approval.id} {event} by {by}{how}: {who}, {what}. <{link}|details>"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if buttons and event == "requested":  # decided in Slack (approvals.slack)
        blocks.append(slack.buttons(approval.id))
    return {
        "text": text,
        "blocks": blocks,
        "tracegate": {
            "event": event,
            "approval_id": approval.id,
            "status": approval.status,
            "link": link,
        },
    }


class Webhook:
    def __init__(self, url: str | None, timeout: float, buttons: bool = False) -> None:
        self.url = url
        self.timeout = timeout
        self.buttons = buttons  # Approve / Deny buttons on new approvals (Slack decisions)
        self.failures = 0
        self.sent = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def post(self, event: str, approval: Approval, link: str) -> None:
        if not self.url:
            return
        task = asyncio.get_running_loop().create_task(
            self._send(message(event, approval, link, self.buttons))
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, payload: dict[str, Any]) -> None:
        assert self.url is not None
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(self.url, json=payload)
            if response.status_code >= 300:
                raise RuntimeError(f"webhook answered {response.status_code}")
            self.sent += 1
        except Exception as exc:
            self.failures += 1
            logger.warning("tracegate: approval webhook failed (request not affected): %s", exc)
