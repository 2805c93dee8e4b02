"""The request side: nothing reaches the store until identity and policy have said yes."""

from __future__ import annotations

import logging

from mitmproxy import http

from tracegate.denial import Denial, gateway_failure
from tracegate.proxy import flowbridge
from tracegate.proxy.answers import deny
from tracegate.proxy.runtime import FlowState, Runtime

logger = logging.getLogger(__name__)


class RequestGate:
    name = "tracegate_request_gate"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def request(self, flow: http.HTTPFlow) -> None:
        gateway = self.runtime.gateway
        if gateway is None or flow.id in self.runtime.flows:
            return  # no config: the Guard refuses; a replayed flow keeps its first decision
        state = FlowState(gateway, gateway.new_exchange(flow.id, flowbridge.incoming(flow)))
        self.runtime.flows[flow.id] = state
        identity = gateway.config.identity
        flowbridge.strip_credentials(flow, identity.token_header, identity.saml_header)
        try:
            if self.runtime.lockdown:
                raise gateway_failure(self.runtime.lockdown)
            upstream = await gateway.authorize(state.exchange)
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
            valid_token = exchange.principal is not None and exchange.token_digest
            key = f"token:{exchange.token_digest}" if valid_token else f"conn:{flow.client_conn.id}"
            exchange.session_id = self.runtime.sessions.session_for(key)


def _summary(state: FlowState) -> str:
    exchange = state.exchange
    who = exchange.principal.subject if exchange.principal else "?"
    grant = exchange.grant
    scope = f"{grant.role}/{grant.purpose}" if grant else "?"
    operation = exchange.access.operation if exchange.access else "?"
    return f"tracegate: allow {who} as {scope}: {operation}"
