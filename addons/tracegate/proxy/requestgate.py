"""The request side: nothing reaches the store until identity and policy have said yes."""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import http

from tracegate.denial import Denial, forbidden, gateway_failure
from tracegate.proxy import flowbridge
from tracegate.proxy.answers import answer_locally, deny, scrub_sts
from tracegate.proxy.approvalhold import ApprovalHold, answer_killed
from tracegate.proxy.idlewatch import keep_alive
from tracegate.proxy.runtime import FlowState, Runtime

logger = logging.getLogger(__name__)


class RequestGate:
    name = "tracegate_request_gate"

    def __init__(self, runtime: Runtime, approvals: ApprovalHold) -> None:
        self.runtime = runtime
        self.approvals = approvals

    async def request(self, flow: http.HTTPFlow) -> None:
        gateway = self.runtime.gateway
        if gateway is None or flow.id in self.runtime.flows:
            return  # no config: the Guard refuses; a replayed flow keeps its first decision
        state = FlowState(gateway, gateway.new_exchange(flow.id, flowbridge.incoming(flow)))
        self.runtime.flows[flow.id] = state
        flowbridge.strip_credentials(flow, gateway.config.identity.credential_headers)
        try:
            if self.runtime.lockdown:
                raise gateway_failure(self.runtime.lockdown)
            if flow.intercepted:
                await self._held(flow, gateway.config.limits.hold_seconds)
            await gateway.authorize(state.exchange)
            if state.exchange.local_answer is not None:
                answer_locally(flow, state, state.exchange.local_answer)
                return
            need = state.exchange.approval_need
            if need is not None:
                await self.approvals.hold(flow, state, need, "request")
            upstream = gateway.upstream_request(state.exchange)
            flowbridge.send_upstream(flow, upstream)
            state.forwarded = True
            flow.comment = _summary(state)
        except Denial as denial:
            deny(flow, state, denial)
        except Exception:
            logger.exception("tracegate: request hook failed for flow %s", flow.id)
            deny(flow, state, gateway_failure("internal error while authorizing the request"))
        finally:
            exchange = state.exchange
            if exchange.sts_call:
                scrub_sts(flow)
            valid_token = exchange.principal is not None and exchange.token_digest
            key = f"token:{exchange.token_digest}" if valid_token else f"conn:{flow.client_conn.id}"
            exchange.session_id = await self.runtime.sessions.resolve(key)

    async def _held(self, flow: http.HTTPFlow, limit: float) -> None:
        """An operator's intercept holds this request: decide and sign only once it is resumed,
        so the held flow never carries a signature, and refuse it if it was edited meanwhile.

        mitmweb's resume and kill fire no hook, and a killed flow never wakes mitmproxy's own
        waiter, so poll with a deadline."""
        before = flowbridge.fingerprint(flow)
        deadline = time.monotonic() + limit
        while flow.intercepted and flow.error is None:
            if time.monotonic() > deadline:
                flow.resume()  # release the client with the refusal below
                raise Denial(503, "HoldTimeout", f"the request was held for more than {limit:g} s")
            keep_alive(flow)
            await asyncio.sleep(0.05)
        if flow.error is not None:
            answer_killed(flow)
            raise forbidden("the held request was killed by an operator")
        if flowbridge.fingerprint(flow) != before:
            raise forbidden("the held request was edited before it was resumed")


def _summary(state: FlowState) -> str:
    exchange = state.exchange
    who = exchange.principal.subject if exchange.principal else "?"
    grant = exchange.grant
    scope = f"{grant.role}/{grant.purpose}" if grant else "?"
    operation = exchange.access.operation if exchange.access else "?"
    approval = exchange.approval
    via = f" (approval {approval['id']} via {approval['how']})" if approval else ""
    return f"tracegate: allow {who} as {scope}: {operation}{via}"
