"""Answering a flow with a denial, the one way every addon does it."""

from __future__ import annotations

import asyncio
import json
import logging

from mitmproxy import http

from tracegate.denial import Denial
from tracegate.exchange import ClientResponse, json_error
from tracegate.proxy import flowbridge
from tracegate.proxy.runtime import FlowState

logger = logging.getLogger(__name__)


def deny(flow: http.HTTPFlow, state: FlowState, denial: Denial) -> None:
    """Replace whatever the flow holds with the refusal; the store's bytes are discarded."""
    state.exchange.deny(denial)
    state.forwarded = False
    state.answered = True
    answer = state.gateway.render_denial(state.exchange, denial)
    state.safe_response = flowbridge.apply(flow, answer)
    state.exchange.returned(b"" if answer.head else answer.body, answer.status)
    flow.comment = f"tracegate: deny ({denial.status} {denial.code}): {denial.reason}"


def answer_locally(flow: http.HTTPFlow, state: FlowState, answer: ClientResponse) -> None:
    """The gateway's own answer (an STS call); nothing is forwarded. Its body holds
    credentials: until the Guard sends it, the flow (which the save and view addons record
    on their way) carries a placeholder."""
    state.forwarded = False
    state.answered = True
    state.safe_response = flowbridge.apply(flow, answer)
    state.exchange.returned(answer.body, answer.status)
    state.deferred_body = answer.body
    assert flow.response is not None
    flow.response.content = SCRUBBED
    flow.comment = f"tracegate: {state.exchange.reason}"


SCRUBBED = b"[removed: tracegate keeps no web identity token or credentials in a flow]"


def scrub_sts(flow: http.HTTPFlow) -> None:
    """An STS call's token (form body or query) leaves the flow at once."""
    flow.request.content = SCRUBBED
    flow.request.path = "/"


def forget_deferred(flow: http.HTTPFlow) -> None:
    """The credentials leave the flow once they are on their way: mitmproxy serialises the
    response when the last response hook returns, so the flow is rewritten a moment later."""

    def forget() -> None:
        if flow.response is not None:
            flow.response.content = SCRUBBED

    asyncio.get_running_loop().call_later(1.0, forget)


def bare_denial(flow: http.HTTPFlow, denial: Denial) -> None:
    """A refusal when no gateway is loaded at all (no config yet, or the script is gone)."""
    body = json_error(denial, flow.id)
    flow.response = http.Response.make(
        denial.status,
        body,
        {
            "content-type": "application/json",
            "x-tracegate-decision": "deny",
            "x-tracegate-reason": denial.reason[:300],
            "cache-control": "no-store",
        },
    )
    flow.comment = f"tracegate: deny ({denial.status}): {denial.reason}"
    logger.warning("tracegate: %s", json.loads(body)["error"]["reason"])
