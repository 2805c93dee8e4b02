"""The response side: the store's answer is masked (or refused) before anything else sees it."""

from __future__ import annotations

import asyncio
import logging
import time

from mitmproxy import http

from tracegate.approvals import response_need
from tracegate.budget import MaskingTimeout, budget
from tracegate.content import body_too_large
from tracegate.denial import Denial, gateway_failure
from tracegate.proxy import flowbridge
from tracegate.proxy.answers import deny
from tracegate.proxy.approvalhold import ApprovalHold
from tracegate.proxy.runtime import FlowState, Runtime

logger = logging.getLogger(__name__)
# Bodies above this are masked in a worker thread so other flows keep moving.
THREAD_THRESHOLD = 256 * 1024


class ResponseFilter:
    name = "tracegate_response_filter"

    def __init__(self, runtime: Runtime, approvals: ApprovalHold) -> None:
        self.runtime = runtime
        self.approvals = approvals

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self.runtime.flows.get(flow.id)
        if state is None or not state.forwarded or flow.response is None:
            return
        try:
            limit = state.gateway.config.limits.max_body_bytes
            length = flow.response.headers.get("content-length")
            if length is not None and int(length) > limit:
                self._refuse_while_streaming(flow, state, body_too_large(limit))
        except Exception:
            logger.exception("tracegate: responseheaders hook failed for flow %s", flow.id)
            self._refuse_while_streaming(flow, state, gateway_failure("internal error"))

    def _refuse_while_streaming(
        self, flow: http.HTTPFlow, state: FlowState, denial: Denial
    ) -> None:
        """Answer with the denial's bytes as soon as the store's first bytes come (a slow store
        must not hold the client), then read the rest of its body and throw it away."""
        deny(flow, state, denial)
        state.oversize = True
        assert flow.response is not None
        denial_body = flow.response.raw_content or b""
        flow.response.raw_content = None
        sent = False

        def discard(chunk: bytes) -> bytes:
            nonlocal sent
            if sent:
                return b""
            sent = True
            return denial_body

        flow.response.stream = discard

    async def response(self, flow: http.HTTPFlow) -> None:
        state = self.runtime.flows.get(flow.id)
        if state is None or not state.forwarded or flow.response is None:
            return
        exchange = state.exchange
        flow.request.method = exchange.request.method  # HEAD was fetched as GET upstream
        try:
            response = flow.response
            raw = response.raw_content or b""
            args = (exchange, response.status_code, dict(response.headers.items()), raw)
            if response.timestamp_end and flow.request.timestamp_end:
                exchange.upstream_seconds = response.timestamp_end - flow.request.timestamp_end
            started = time.monotonic()
            with budget(state.gateway.config.limits.mask_seconds):
                if len(raw) > THREAD_THRESHOLD:
                    answer = await asyncio.to_thread(state.gateway.respond, *args)
                else:
                    answer = state.gateway.respond(*args)
            exchange.masking_seconds = time.monotonic() - started
            state.safe_response = flowbridge.apply(flow, answer)
            exchange.returned(b"" if answer.head else answer.body, answer.status)
            if exchange.response_rules and answer.status < 300:
                need = response_need(
                    exchange.response_rules, exchange.report, exchange.bytes_upstream or 0
                )
                if need is not None:  # the masked answer waits for a human
                    await self.approvals.hold(flow, state, need, "response")
        except Denial as denial:
            deny(flow, state, denial)
        except MaskingTimeout as exc:
            deny(
                flow,
                state,
                Denial(
                    503,
                    "MaskingTimeout",
                    f"refused, not served unmasked: {exc} (limits.mask_seconds)",
                ),
            )
        except Exception:
            logger.exception("tracegate: response hook failed for flow %s", flow.id)
            deny(flow, state, gateway_failure("internal error while masking the response"))
