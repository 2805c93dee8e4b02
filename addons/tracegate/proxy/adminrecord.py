"""An audit row for something done on the admin listener (a console sign-in, a body viewed,
a Slack callback): recorded like any flow, so the trail says who did it and what came of it."""

from __future__ import annotations

import uuid

from tracegate.exchange import IncomingRequest
from tracegate.identity.principal import Principal
from tracegate.proxy.runtime import Runtime


async def record_admin_flow(
    runtime: Runtime,
    request: IncomingRequest,
    principal: Principal | None,
    decision: str,
    reason: str,
    status: int,
    code: str | None = None,
    identity: str | None = None,
) -> None:
    gateway, audit = runtime.gateway, runtime.audit
    if gateway is None or audit is None:
        return
    exchange = gateway.new_exchange(str(uuid.uuid4()), request)
    exchange.principal = principal
    exchange.identity = identity
    exchange.decision, exchange.reason, exchange.status = decision, reason, status
    if decision == "deny":
        exchange.denial_code = code
    runtime.metrics.record_flow(exchange, None)
    await audit.record(exchange.to_audit_record())
