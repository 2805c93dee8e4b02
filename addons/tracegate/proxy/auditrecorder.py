"""Every flow gets its audit row, and no response leaves before that row is durable."""

from __future__ import annotations

import logging

from mitmproxy import http

from tracegate.audit import AuditWriteError
from tracegate.denial import Denial, gateway_failure
from tracegate.proxy.answers import deny
from tracegate.proxy.runtime import FlowState, Runtime

logger = logging.getLogger(__name__)


class AuditRecorder:
    name = "tracegate_audit_recorder"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def response(self, flow: http.HTTPFlow) -> None:
        state = self.runtime.flows.get(flow.id)
        if state is None or flow.response is None:
            return
        try:
            if state.safe_response is not flow.response:
                deny(flow, state, gateway_failure("the response was not masked"))
            await self._write(state)
            state.released = flow.response
        except AuditWriteError as exc:
            # This denial cannot be recorded either; the log line is its only trace.
            logger.error("tracegate: flow %s denied unrecorded: %s", flow.id, exc)
            deny(flow, state, Denial(503, "AuditUnavailable", "the audit log cannot be written"))
            state.released = flow.response
        except Exception:
            logger.exception("tracegate: audit hook failed for flow %s", flow.id)
            deny(flow, state, gateway_failure("internal error while recording the audit row"))

    async def error(self, flow: http.HTTPFlow) -> None:
        state = self.runtime.flows.get(flow.id)
        if state is None:
            return
        exchange = state.exchange
        if exchange.decision != "deny":
            exchange.decision = "error"
            exchange.reason = flow.error.msg if flow.error else "flow failed"
        try:
            await self._write(state)
        except Exception as exc:
            logger.error("tracegate: audit row for failed flow %s lost: %s", flow.id, exc)

    async def _write(self, state: FlowState) -> None:
        if self.runtime.audit is None:
            raise AuditWriteError("no audit log is open")
        await self.runtime.audit.record(state.exchange.to_audit_record())
