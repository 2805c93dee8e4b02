"""The approval endpoint on the admin listener: list, show, approve, deny.

Callers authenticate with their own OIDC token (the same validation as requests). An approver
sees the approvals they may decide and requesters see their own; never any trace data.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from tracegate.approvals import Actor, ApprovalError
from tracegate.approvals.model import Approval
from tracegate.approvals.store import is_requester, may_decide
from tracegate.denial import Denial
from tracegate.identity.oidc import bearer_token
from tracegate.policy import roles_of
from tracegate.proxy.jsonhandler import JsonHandler
from tracegate.proxy.runtime import Runtime
from tracegate.state.database import DatabaseUnavailable

STATUSES = ("pending", "approved", "denied", "expired", "cancelled", "all")


class ApprovalHandler(JsonHandler):
    def initialize(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def write_error_json(self, status: int, code: str, reason: str) -> None:
        self.write_json(status, {"error": {"status": status, "code": code, "reason": reason}})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Unexpected failures (e.g. the database is locked) are JSON too, without internals."""
        exc = kwargs.get("exc_info", (None, None))[1]
        if isinstance(exc, sqlite3.Error | DatabaseUnavailable):
            status_code, reason = 503, "the approval store is unavailable; try again later"
        else:
            reason = self._reason
        code = "ApprovalUnavailable" if status_code == 503 else "InternalError"
        self.write_error_json(status_code, code, reason)

    async def actor(self) -> Actor | None:
        """The caller, authenticated like any request; None after answering 401/503."""
        gateway, desk = self.runtime.gateway, self.runtime.approvals
        if gateway is None or desk is None:
            self.write_error_json(503, "ApprovalUnavailable", "the gateway has no config loaded")
            return None
        try:
            headers = {k: v for k, v in self.request.headers.get_all()}
            token = bearer_token(headers, gateway.config.identity.token_header)
            principal = await gateway.validator.validate(token)
        except Denial as denial:
            self.set_header("WWW-Authenticate", 'Bearer realm="tracegate-approvals"')
            self.write_error_json(denial.status, denial.code, denial.reason)
            return None
        return Actor(
            principal.subject,
            principal.issuer,
            tuple(roles_of(principal, gateway.config)),
            tuple(principal.groups),
        )

    def visible(self, approval: Approval, actor: Actor) -> bool:
        return may_decide(approval, actor) or is_requester(approval, actor)


class ApprovalListHandler(ApprovalHandler):
    async def get(self) -> None:
        actor = await self.actor()
        if actor is None:
            return
        status = self.get_query_argument("status", "pending")
        if status not in STATUSES:
            return self.write_error_json(
                400, "InvalidRequest", f"status must be one of {', '.join(STATUSES)}"
            )
        assert self.runtime.approvals is not None
        found = await self.runtime.approvals.store.list(None if status == "all" else status)
        self.write_json(200, {"approvals": [a.summary() for a in found if self.visible(a, actor)]})


class ApprovalItemHandler(ApprovalHandler):
    async def get(self, approval_id: str) -> None:
        actor = await self.actor()
        if actor is None:
            return
        desk = self.runtime.approvals
        assert desk is not None
        approval = await desk.store.get(approval_id)
        if approval is None or not self.visible(approval, actor):
            return self.write_error_json(404, "NoSuchApproval", f"no approval {approval_id}")
        events = await desk.store.events(approval_id)
        self.write_json(200, {"approval": approval.summary(), "events": events})


class ApprovalDecisionHandler(ApprovalHandler):
    async def post(self, approval_id: str, verb: str) -> None:
        actor = await self.actor()
        if actor is None:
            return
        desk = self.runtime.approvals
        assert desk is not None
        comment = ""
        if self.request.body:
            try:
                body = json.loads(self.request.body)
                comment = str(body.get("comment", "")) if isinstance(body, dict) else ""
            except ValueError:
                return self.write_error_json(400, "InvalidRequest", "the body must be JSON")
        try:
            approval = await desk.store.decide(
                approval_id, actor, verb == "approve", "endpoint", comment
            )
        except ApprovalError as error:
            if error.status != 404:
                await desk.store.refused(approval_id, actor, error)
            return self.write_error_json(error.status, error.code, error.reason)
        if approval.status != "pending":
            desk.webhook.post(approval.status, approval, desk.link(approval.id))
        self.write_json(200, {"approval": approval.summary()})


def routes(runtime: Runtime) -> list[tuple[str, type, dict[str, Any]]]:
    args = {"runtime": runtime}
    return [
        (r"/approvals", ApprovalListHandler, args),
        (r"/approvals/(apv_[0-9a-f]+)", ApprovalItemHandler, args),
        (r"/approvals/(apv_[0-9a-f]+)/(approve|deny)", ApprovalDecisionHandler, args),
    ]
