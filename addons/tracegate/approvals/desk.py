"""The gateway's side of an approval: grant, join, or open one, and say what the client hears.

Free of mitmproxy: the proxy's hold loop asks `verdict` while it keeps the flow, and turns the
outcome into a response. Webhook posts go out for each new approval and each decision.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tracegate.approvals import display
from tracegate.approvals.model import (
    CANCELLED,
    DENIED,
    EXPIRED,
    PENDING,
    Approval,
    ApprovalNeed,
    new_id,
    request_key,
)
from tracegate.approvals.notify import Webhook
from tracegate.approvals.store import MITMWEB_OPERATOR, ApprovalStore
from tracegate.denial import Denial

if TYPE_CHECKING:
    from tracegate.exchange import Exchange


class ApprovalDesk:
    def __init__(self, store: ApprovalStore, webhook: Webhook, link_base: str) -> None:
        self.store = store
        self.webhook = webhook
        self.link_base = link_base.rstrip("/")
        # Held retries of one request must join one approval, not race to open two.
        self._opening = asyncio.Lock()

    def link(self, approval_id: str) -> str:
        return f"{self.link_base}/approvals/{approval_id}"

    async def admit(self, exchange: Exchange, need: ApprovalNeed, phase: str) -> Approval | None:
        """None when a valid grant covers this request; otherwise the approval to wait for.

        Raises Denial when the rule requires a reason and none was given."""
        principal, grant, access = exchange.principal, exchange.grant, exchange.access
        assert principal is not None and grant is not None and access is not None
        request = exchange.request
        key = request_key(
            request.method, request.path, request.query, grant.role, grant.purpose, request.body
        )
        granted = await self.store.grant_for(principal.subject, principal.issuer, key)
        if granted is not None:
            await self.store.grant_used(granted, exchange.flow_id)
            exchange.approval = self.outcome(granted, "grant")
            return None
        reason = exchange.reason_given
        if need.rule.reason_required and not reason:
            raise Denial(
                403,
                "ReasonRequired",
                f"this request needs approval (rule {need.rule.id}: {need.why}); give a reason "
                "in the X-Tracegate-Reason header",
            )
        async with self._opening:
            pending = self.store.find_pending(principal.subject, principal.issuer, key)
            if pending is not None:
                await self.store.joined(pending, exchange.flow_id)
                exchange.approval = self.outcome(pending, "joined")
                return pending
            return await self._open(exchange, need, phase, key, reason)

    async def _open(
        self, exchange: Exchange, need: ApprovalNeed, phase: str, key: str, reason: str
    ) -> Approval:
        principal, grant, access = exchange.principal, exchange.grant, exchange.access
        assert principal is not None and grant is not None and access is not None
        request = exchange.request
        rule, now = need.rule, time.time()
        approval = Approval(
            id=new_id(),
            rule_id=rule.id,
            phase=phase,
            why=need.why,
            required=rule.required,
            approver_roles=list(rule.approvers.roles),
            approver_groups=list(rule.approvers.groups),
            requester_subject=principal.subject,
            requester_issuer=principal.issuer,
            role=grant.role,
            purpose=grant.purpose,
            reason=reason,
            method=request.method.upper(),
            path=request.path,
            query=[list(p) for p in request.query],
            operation=access.operation,
            resource=access.resource,
            request_key=key,
            flow_id=exchange.flow_id,
            created_at=now,
            wait_until=now + rule.wait_seconds,
            pending_until=now + max(rule.pending_seconds, rule.wait_seconds),
            grant_seconds=rule.grant_seconds,
        )
        await self.store.create(approval)
        exchange.approval = self.outcome(approval, "requested")
        self.webhook.post("requested", approval, self.link(approval.id))
        return approval

    def outcome(self, approval: Approval, how: str) -> dict[str, object]:
        """What the flow's audit row says about its approval."""
        return {
            "id": approval.id,
            "rule": approval.rule_id,
            "status": approval.status,
            "how": how,
            "by": [v.subject for v in approval.votes],
        }

    def comment(self, approval: Approval) -> str:
        """The line mitmweb and the console show on the held flow."""
        wanted = ", ".join(
            [f"role {r}" for r in approval.approver_roles]
            + [f"group {g}" for g in approval.approver_groups]
        )
        reason = display.plain(approval.reason) if approval.reason else "(none)"
        return (
            f"tracegate: HELD for approval {approval.id} ({approval.required} of {wanted}): "
            f"{display.plain(approval.requester_subject)} as {approval.role}/{approval.purpose} "
            f"asks {approval.operation} {display.plain(approval.resource)}; why held: "
            f"{display.plain(approval.why)}; reason given: {reason}. Resume = approve, "
            f"Kill = deny, or use {self.link(approval.id)}"
        )

    async def resumed_in_ui(self, approval: Approval, ui_resume: str) -> Approval:
        """An operator resumed the held flow in mitmweb or the console."""
        if ui_resume == "refuse":
            raise Denial(
                403,
                "ApprovalRequired",
                f"resuming in mitmweb is not an approval here; approve {approval.id} at "
                f"{self.link(approval.id)}",
                details={"approval_id": approval.id, "approval_status": PENDING},
            )
        decided = await self.store.decide(
            approval.id, MITMWEB_OPERATOR, True, "mitmweb", "resumed in mitmweb"
        )
        self.webhook.post("approved", decided, self.link(decided.id))
        return decided

    async def killed_in_ui(self, approval: Approval) -> Denial:
        decided = await self.store.decide(
            approval.id, MITMWEB_OPERATOR, False, "mitmweb", "killed in mitmweb"
        )
        self.webhook.post("denied", decided, self.link(decided.id))
        return self.refusal(decided)

    async def cancel(self, approval: Approval, flow_id: str) -> None:
        """The client went away while held: nobody waits for this approval any more."""
        closed = await self.store.close_as(approval.id, CANCELLED, flow_id, "client disconnected")
        if closed is not None and closed.status == CANCELLED:
            self.webhook.post("cancelled", closed, self.link(closed.id))

    async def edited(self, approval: Approval, flow_id: str) -> Denial:
        closed = await self.store.close_as(
            approval.id, DENIED, flow_id, "the held request was edited before it was resumed"
        )
        if closed is not None:
            self.webhook.post("denied", closed, self.link(closed.id))
        return Denial(403, "AccessDenied", "the held request was edited before it was resumed")

    async def timed_out(self, approval: Approval, flow_id: str) -> Denial:
        """The client's wait is over; the approval stays open and a retry joins it."""
        await self.store.client_released(approval.id, flow_id)
        return Denial(
            403,
            "ApprovalPending",
            f"approval {approval.id} is still pending (why held: {approval.why}); retry the same "
            f"request once it is approved; status at {self.link(approval.id)}",
            details={
                "approval_id": approval.id,
                "approval_status": PENDING,
                "approval_url": self.link(approval.id),
            },
        )

    def refusal(self, approval: Approval) -> Denial:
        """The client's answer for an approval that ended without a yes."""
        details = {"approval_id": approval.id, "approval_status": approval.status}
        if approval.status == DENIED:
            by = approval.decided_by or "an approver"
            how = f" via {approval.decision_how}" if approval.decision_how else ""
            note = f": {approval.decision_comment}" if approval.decision_comment else ""
            return Denial(
                403,
                "ApprovalDenied",
                f"approval {approval.id} denied by {by}{how}{note}",
                details=details,
            )
        if approval.status == EXPIRED:
            return Denial(
                403, "ApprovalExpired", f"approval {approval.id} expired undecided", details=details
            )
        return Denial(
            403,
            "ApprovalCancelled",
            f"approval {approval.id} was {approval.status}",
            details=details,
        )
