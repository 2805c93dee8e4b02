"""Every flow gets its audit row, and no response leaves before that row is durable."""

from __future__ import annotations

import logging
import time

from mitmproxy import http

from tracegate.audit import AuditRecord, AuditWriteError
from tracegate.audit.bodies import body_record, request_summary
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
            started = time.monotonic()
            record = await self._write(state, flow)
            state.released = flow.response
            self._report(state, time.monotonic() - started, record)
        except AuditWriteError as exc:
            # This denial cannot be recorded either; the log line is its only trace.
            logger.error("tracegate: flow %s denied unrecorded: %s", flow.id, exc)
            deny(flow, state, Denial(503, "AuditUnavailable", "the audit log cannot be written"))
            state.released = flow.response
            self.runtime.metrics.audit_failures.inc()
            self._report(state, None)
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
            timeout = state.gateway.config.limits.upstream_timeout_seconds
            if _store_went_silent(flow, state, timeout):
                exchange.status = 504
                exchange.reason = (
                    f"UpstreamTimeout: the store sent nothing for {timeout} s "
                    "(limits.upstream_timeout_seconds); the connection was closed"
                )
        try:
            await self._write(state)
        except Exception as exc:
            self.runtime.metrics.audit_failures.inc()
            logger.error("tracegate: audit row for failed flow %s lost: %s", flow.id, exc)
        self._report(state, None)

    def _report(
        self, state: FlowState, audit_seconds: float | None, record: AuditRecord | None = None
    ) -> None:
        """Metrics and the decision log line; a failure here never changes the answer."""
        try:
            self.runtime.metrics.record_flow(state.exchange, audit_seconds)
            if self.runtime.decisions is not None:
                self.runtime.decisions.write(state.exchange.to_log_entry(record))
        except Exception:
            logger.exception("tracegate: could not report flow %s", state.exchange.flow_id)

    async def _write(self, state: FlowState, flow: http.HTTPFlow | None = None) -> AuditRecord:
        if self.runtime.audit is None:
            raise AuditWriteError("no audit log is open")
        record = state.exchange.to_audit_record()
        if flow is not None and flow.response is not None and _keeps_bodies(state):
            record.body = _seen(state, flow)
        await self.runtime.audit.record(record)
        return record


def _keeps_bodies(state: FlowState) -> bool:
    if state.exchange.sts_call:
        return False  # its request holds a web identity token, its answer credentials
    grant = state.exchange.grant
    if grant is None:
        return True  # a refusal before any role: the body is tracegate's own denial
    return state.gateway.config.roles[grant.role].bodies == "masked"


def _seen(state: FlowState, flow: http.HTTPFlow) -> dict:
    """The response exactly as it leaves for the client; the request as the client sent it."""
    exchange, config = state.exchange, state.gateway.config
    request = exchange.request
    summary = request_summary(
        request.method,
        request.path,
        request.query,
        request.headers,
        config.identity.credential_headers,
        scheme="https" if request.tls else "http",
        host=config.listen.host,
        port=config.listen.port,
    )
    response = flow.response
    assert response is not None
    body = b"" if request.method.upper() == "HEAD" else (response.raw_content or b"")
    return body_record(
        exchange.flow_id,
        summary,
        response.status_code,
        response.headers.items(multi=True),
        body,
        config.audit.max_body_bytes,
        flow.request.timestamp_start,
        response.timestamp_end or time.time(),
    )


def _store_went_silent(flow: http.HTTPFlow, state: FlowState, timeout: int) -> bool:
    """mitmproxy closes an idle connection without saying why; a forwarded request with no
    answer that waited the whole timeout was the store's silence, not the client leaving."""
    sent = flow.request.timestamp_end
    return (
        state.forwarded
        and flow.response is None
        and sent is not None
        and time.time() - sent >= timeout - 0.5
    )
