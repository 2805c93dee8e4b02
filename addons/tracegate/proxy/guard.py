"""The last addon in the chain: whatever went wrong before, nothing unreleased gets out.

mitmproxy forwards a flow unchanged when an addon raises, skips the rest of that addon's chain
entry, and drops a `-s` script whose reload fails. The Guard is its own chain entry and checks
the markers the other addons leave: a request that was not authorized is refused before it
reaches the store, and a response that was not both masked and audited is replaced.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from tracegate.audit import AuditRecord
from tracegate.denial import Denial, gateway_failure
from tracegate.proxy import flowbridge
from tracegate.proxy.answers import bare_denial, forget_deferred
from tracegate.proxy.runtime import FlowState, Runtime

logger = logging.getLogger(__name__)


class Guard:
    name = "tracegate_guard"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def request(self, flow: http.HTTPFlow) -> None:
        state = self.runtime.flows.get(flow.id)
        if state is not None and (state.forwarded or state.answered):
            return
        reason = self.runtime.lockdown or "the gateway did not authorize this request"
        bare_denial(flow, Denial(503, "GatewayUnavailable", reason))

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = self.runtime.flows.get(flow.id)
        self._hide_credentials(flow, state)
        if flow.response is not None and not (state and state.oversize):
            flow.response.stream = False  # streaming would bypass masking

    async def response(self, flow: http.HTTPFlow) -> None:
        state = self.runtime.flows.pop(flow.id, None)
        if state is not None and flow.response is not None and state.released is flow.response:
            if state.deferred_body is not None:
                flow.response.content = state.deferred_body
                forget_deferred(flow)
            return
        denial = gateway_failure(
            self.runtime.lockdown or "the response was not released by masking and audit"
        )
        logger.error("tracegate: guard replaced the response of flow %s", flow.id)
        bare_denial(flow, denial)
        await self._record(flow, denial)

    def error(self, flow: http.HTTPFlow) -> None:
        self._hide_credentials(flow, self.runtime.flows.pop(flow.id, None))

    @staticmethod
    def _hide_credentials(flow: http.HTTPFlow, state: FlowState | None) -> None:
        if state is None:  # no gateway (lockdown): still never keep a signature
            flowbridge.hide_upstream_signature(flow)
        else:
            flowbridge.hide_upstream_signature(flow, state.gateway.store.secret_headers)

    async def _record(self, flow: http.HTTPFlow, denial: Denial) -> None:
        if self.runtime.audit is None:
            return
        record = AuditRecord(
            flow_id=flow.id,
            method=flow.request.method,
            path=flow.request.path.split("?", 1)[0],
            decision="deny",
            reason=f"guard: {denial.reason}",
            status=denial.status,
        )
        try:
            await self.runtime.audit.record(record)
        except Exception as exc:
            logger.error("tracegate: guard could not record flow %s: %s", flow.id, exc)
