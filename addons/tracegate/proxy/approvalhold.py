"""Holding a flow until a human decides, and letting every other flow go on meanwhile.

The flow is intercepted (mitmweb and the console show it with a comment naming the requester,
the request, the rule and the approval id) and this async hook polls with a deadline: mitmweb's
Resume and Kill fire no hook and a killed flow never wakes mitmproxy's own waiter, so the loop
watches for an endpoint decision, a resume, a kill, the client leaving, and the deadline. Every
outcome resumes the flow, so the client is answered at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections import Counter

from mitmproxy import connection, ctx, hooks, http

from tracegate.approvals import ApprovalNeed
from tracegate.approvals.model import APPROVED, FINAL, Approval
from tracegate.denial import Denial
from tracegate.proxy import flowbridge
from tracegate.proxy.idlewatch import keep_alive
from tracegate.proxy.runtime import FlowState, Runtime
from tracegate.state.database import DatabaseUnavailable

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.05
SWEEP_SECONDS = 5.0


class ApprovalHold:
    name = "tracegate_approval_hold"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._holding: Counter[str] = Counter()  # client connection id -> flows held
        self._gone: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None

    # -- hooks -------------------------------------------------------------------------

    def running(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def done(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def client_disconnected(self, client: connection.Client) -> None:
        if self._holding[client.id]:
            self._gone.add(client.id)

    # -- the hold ----------------------------------------------------------------------

    async def hold(
        self, flow: http.HTTPFlow, state: FlowState, need: ApprovalNeed, phase: str
    ) -> None:
        """Return once approved (or a grant covers the request); raise Denial otherwise."""
        try:
            await self._hold(flow, state, need, phase)
        except (sqlite3.Error, DatabaseUnavailable) as exc:  # no durable record: none released
            logger.error("tracegate: approval store failed for flow %s: %s", flow.id, exc)
            flow.resume()
            raise Denial(
                503, "ApprovalUnavailable", "the approval could not be recorded; try again later"
            ) from None

    async def _hold(
        self, flow: http.HTTPFlow, state: FlowState, need: ApprovalNeed, phase: str
    ) -> None:
        desk = self.runtime.approvals
        if desk is None:
            raise Denial(503, "ApprovalUnavailable", "approvals are not available")
        exchange = state.exchange
        approval = await desk.admit(exchange, need, phase)
        if approval is None:
            return  # a grant from an earlier approval covers this exact request
        config = state.gateway.config
        flow.intercept()
        flow.comment = desk.comment(approval)
        self._announce(flow)
        before = _fingerprint(flow, phase)
        deadline = time.monotonic() + min(
            need.rule.wait_seconds, max(approval.pending_until - time.time(), 0)
        )
        client = flow.client_conn.id
        held_since = time.monotonic()
        self._holding[client] += 1
        how = "endpoint"
        logger.info("tracegate: flow %s held for approval %s", flow.id, approval.id)
        try:
            while True:
                current = _latest(desk, approval)
                if current.status == APPROVED:
                    approval = current
                    break
                if current.status in FINAL:
                    raise desk.refusal(current)
                if flow.error is not None:
                    answer_killed(flow)
                    raise await desk.killed_in_ui(approval)
                if not flow.intercepted:
                    approval = await desk.resumed_in_ui(approval, config.approvals.ui_resume)
                    how = "mitmweb"
                    break
                if client in self._gone:
                    await desk.cancel(approval, flow.id)
                    raise Denial(499, "ClientClosedRequest", "the client left while held")
                if time.monotonic() > deadline:
                    raise await desk.timed_out(approval, flow.id)
                # Deaf to decisions for longer than the grace (counted from when this flow was
                # held, since the database took its approval then): it could miss one.
                silent = min(desk.store.unreachable_for(), time.monotonic() - held_since)
                if silent > config.state.grace_seconds:
                    raise Denial(
                        503,
                        "ApprovalUnavailable",
                        f"the shared database has been unreachable for {silent:.0f} s "
                        "(state.grace_seconds); the held request is refused, try again later",
                    )
                keep_alive(flow)
                await asyncio.sleep(POLL_SECONDS)
        except Denial as denial:
            exchange.approval = {
                **desk.outcome(_latest(desk, approval), "held"),
                "result": denial.code,
            }
            raise
        finally:
            flow.resume()
            self._holding[client] -= 1
            if not self._holding[client]:
                del self._holding[client]
                self._gone.discard(client)
        if _fingerprint(flow, phase) != before:
            exchange.approval = {**desk.outcome(approval, how), "result": "edited"}
            raise await desk.edited(approval, flow.id)
        exchange.approval = desk.outcome(approval, how)
        flow.comment = f"tracegate: approved ({approval.id} via {how})"

    def _announce(self, flow: http.HTTPFlow) -> None:
        """Tell mitmweb and the console the flow is now intercepted, with its comment."""
        try:
            ctx.master.addons.trigger(hooks.UpdateHook([flow]))
        except Exception:  # a view that cannot update must not stop the hold
            logger.exception("tracegate: could not announce held flow %s", flow.id)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            desk = self.runtime.approvals
            if desk is None:
                continue
            try:
                for expired in await desk.store.sweep():
                    desk.webhook.post("expired", expired, desk.link(expired.id))
            except Exception as exc:
                logger.error("tracegate: approval sweep failed: %s", exc)


def answer_killed(flow: http.HTTPFlow) -> None:
    """A flow killed in mitmweb would just drop the client's connection; clear the kill so
    the client gets a clear refusal instead (the refusal replaces anything the flow held)."""
    flow.error = None
    flow.live = True


def _latest(desk, approval: Approval) -> Approval:
    return desk.store.live.get(approval.id, approval)


def _fingerprint(flow: http.HTTPFlow, phase: str) -> str:
    """The request (or, for a held response, the response) as an operator could edit it."""
    if phase == "request" or flow.response is None:
        return flowbridge.fingerprint(flow)
    response = flow.response
    digest = hashlib.sha256(f"{response.status_code}\0".encode())
    for name, value in response.headers.items(multi=True):
        digest.update(name.lower().encode() + b":" + value.encode() + b"\0")
    digest.update(response.raw_content or b"")
    return flowbridge.fingerprint(flow) + digest.hexdigest()
