"""The admin listener: /healthz, /readyz, /metrics and /approvals on a port of their own.

It is served by tornado (which mitmproxy already uses for mitmweb) in the proxy's event loop,
bound to `admin.host:admin.port`, so it is never reachable through the store's route.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import tornado.httpserver
import tornado.netutil
import tornado.web

from tracegate.denial import Denial
from tracegate.exchange import IncomingRequest
from tracegate.health import readiness
from tracegate.identity.saml import ExchangeIssuer
from tracegate.metrics import CONTENT_TYPE
from tracegate.proxy import approvalapi, console, slackapi
from tracegate.proxy.jsonhandler import JsonHandler
from tracegate.proxy.runtime import Runtime

logger = logging.getLogger(__name__)


class _Handler(JsonHandler):
    def initialize(self, runtime: Runtime, listener: AdminListener) -> None:
        self.runtime = runtime
        self.listener = listener


class HealthHandler(_Handler):
    def get(self) -> None:
        self.write_json(200, {"status": "alive"})


class ReadyHandler(_Handler):
    async def get(self) -> None:
        checks = await self.listener.readiness()
        ready = all(c.ok for c in checks)
        self.write_json(
            200 if ready else 503,
            {"ready": ready, "checks": {c.name: c.to_dict() for c in checks}},
        )


class MetricsHandler(_Handler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.runtime.metrics.exposition())


class SamlExchangeHandler(_Handler):
    """POST a base64 SAML assertion (raw body, or form field SAMLResponse) and get a short-lived
    bearer token for it; refusals are audited like any refused request."""

    async def post(self) -> None:
        gateway = self.runtime.gateway
        if gateway is None or gateway.saml is None:
            return self.write_json(404, {"error": {"reason": "no SAML provider is configured"}})
        encoded = self.get_body_argument("SAMLResponse", default=None)
        if encoded is None:
            encoded = self.request.body.decode(errors="replace")
        exchange = gateway.new_exchange(
            str(uuid.uuid4()),
            IncomingRequest("POST", "/saml/exchange", client=self.request.remote_ip or ""),
        )
        try:
            exchange.principal = await asyncio.to_thread(gateway.saml.validate, encoded.strip())
            token, expires = ExchangeIssuer.token(
                exchange.principal, gateway.config.identity.exchange_token_seconds
            )
        except Denial as denial:
            exchange.deny(denial)
            await self._audit(exchange)
            return self.write_json(
                denial.status,
                {
                    "error": {
                        "status": denial.status,
                        "code": denial.code,
                        "reason": denial.reason,
                        "flow_id": exchange.flow_id,
                    }
                },
            )
        exchange.decision, exchange.reason, exchange.status = "allow", "SAML token exchanged", 200
        await self._audit(exchange)
        self.write_json(
            200,
            {
                "token": token,
                "token_type": "Bearer",
                "expires_at": expires,
                "subject": exchange.principal.subject,
            },
        )

    async def _audit(self, exchange) -> None:
        self.runtime.metrics.record_flow(exchange, None)
        if self.runtime.audit is not None:
            await self.runtime.audit.record(exchange.to_audit_record())


class AdminListener:
    name = "tracegate_admin"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.server: tornado.httpserver.HTTPServer | None = None
        self.port: int | None = None
        self._cached: tuple[float, list] | None = None

    def running(self) -> None:
        config = self.runtime.config
        if config is None or not config.admin.enabled or self.server is not None:
            return
        app = tornado.web.Application(
            [
                (r"/healthz", HealthHandler, {"runtime": self.runtime, "listener": self}),
                (r"/readyz", ReadyHandler, {"runtime": self.runtime, "listener": self}),
                (r"/metrics", MetricsHandler, {"runtime": self.runtime, "listener": self}),
                (
                    r"/saml/exchange",
                    SamlExchangeHandler,
                    {"runtime": self.runtime, "listener": self},
                ),
                *approvalapi.routes(self.runtime),
                *console.routes(self.runtime),
                *slackapi.routes(self.runtime),
            ]
        )
        sockets = tornado.netutil.bind_sockets(config.admin.port, config.admin.host)
        self.port = sockets[0].getsockname()[1]
        self.server = tornado.httpserver.HTTPServer(app)
        self.server.add_sockets(sockets)
        self.runtime.admin_url = f"http://{config.admin.host}:{self.port}"
        if self.runtime.approvals is not None:
            self.runtime.approvals.link_base = self.runtime.approval_link_base()
        logger.info("tracegate: admin listening at %s:%s", config.admin.host, self.port)

    async def readiness(self) -> list:
        """Readiness, cached briefly: each evaluation signs a request to the store."""
        config = self.runtime.config
        ttl = config.admin.readiness_cache_seconds if config else 0
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < ttl:
            return self._cached[1]
        audit = self.runtime.audit
        checks = await readiness(
            self.runtime.gateway,
            self.runtime.lockdown,
            audit,
            self.runtime.database,
        )
        self._cached = (now, checks)
        return checks

    def done(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
