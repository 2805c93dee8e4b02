"""The console's routes on the admin listener (/console): sign-in, approvals, audit pages.

Thin: sign-in is `console.signin`, sessions `console.sessions`, pages `console.pages`, what
the audit pages show `console.views` and `console.charts`; decisions go through the approval
store with the same rules as the endpoint. Every response carries a strict Content-Security-
Policy; every POST needs the session's CSRF token and a same-origin request. Sign-ins, refusals,
views of a served body and exports are audited like any flow.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import tornado.web

from tracegate.approvals import Actor, ApprovalError
from tracegate.approvals.store import is_requester, may_decide
from tracegate.audit.reader import AuditReader, Filters, export
from tracegate.config import GatewayConfig
from tracegate.configbase import read_secret
from tracegate.console import charts, pages, views
from tracegate.console.sessions import ConsoleSession, ConsoleSessions
from tracegate.console.signin import SignIn, SignInFailed
from tracegate.exchange import IncomingRequest
from tracegate.identity.principal import Principal
from tracegate.policy import roles_of
from tracegate.proxy.adminrecord import record_admin_flow
from tracegate.proxy.runtime import Runtime
from tracegate.state.auditlog import SharedAuditLog
from tracegate.state.portable import PortableConnection

logger = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent.parent / "console" / "static"
SESSION_COOKIE = "tg_console"
SIGNIN_COOKIE = "tg_signin"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class Console:
    """What the routes share: the sign-in flow and the sessions, for one console config."""

    def __init__(self, config: GatewayConfig, public_url: str) -> None:
        settings = config.console
        providers = config.identity.providers
        provider = next((p for p in providers if p.name == settings.provider), providers[0])
        secret = (
            read_secret("console.client_secret_env", env=settings.client_secret_env)
            if settings.client_secret_env
            else None
        )
        self.settings = settings
        self.public_url = public_url.rstrip("/")
        self.signin = SignIn(
            provider,
            settings.client_id or provider.audience,
            secret,
            f"{self.public_url}/console/callback",
        )
        self.sessions = ConsoleSessions(settings.idle_seconds, settings.max_seconds)
        self.last_verify: tuple[str, bool, str] | None = None


def console_for(runtime: Runtime) -> Console | None:
    """The console of the config in force (made again when its `console` section changes)."""
    config = runtime.config
    if config is None or not config.console.enabled:
        return None
    public = config.console.public_url or runtime.approval_link_base(config)
    current = runtime.console
    if (
        not isinstance(current, Console)
        or current.settings != config.console
        or current.public_url != public.rstrip("/")
    ):
        current = Console(config, public)
        runtime.console = current
    return current


def read_trail[T](runtime: Runtime, work: Callable[[AuditReader], T]) -> T:
    """`work` on a reader of the trail in force: the shared log, or this replica's file."""
    audit = runtime.audit
    if isinstance(audit, SharedAuditLog):
        with audit.database.connection() as conn:
            portable = PortableConnection(conn, owned=False)
            try:
                return work(AuditReader(portable))
            finally:
                portable.close()
    assert audit is not None
    reader = AuditReader(audit.path)
    try:
        return work(reader)
    finally:
        reader.close()


class ConsoleHandler(tornado.web.RequestHandler):
    def initialize(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        # "same-origin", not "no-referrer": with that, browsers send `Origin: null` on our own
        # POSTs, which the CSRF check must refuse.
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "DENY")
        self.set_header("Cache-Control", "no-store")

    @property
    def console(self) -> Console:
        console = console_for(self.runtime)
        if console is None:
            raise tornado.web.HTTPError(404)
        return console

    def session(self) -> ConsoleSession | None:
        return self.console.sessions.get(self.get_cookie(SESSION_COOKIE))

    def html(self, status: int, body: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(body)

    def json(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def signed_in(self, need: str, api: bool = False) -> ConsoleSession | None:
        """The session, if it may do `need` ("approve" or "audit"); else answered here."""
        session = self.session()
        if session is None:
            if api:
                self.json(401, {"error": {"code": "SignInRequired", "reason": "sign in first"}})
            else:
                self.redirect(f"/console/login?then={quote(self.request.uri or '/console')}")
            return None
        allowed = session.can_approve if need == "approve" else session.can_audit
        if not allowed:
            reason = f"your console roles do not let you {need}"
            if api:
                self.json(403, {"error": {"code": "NotAllowed", "reason": reason}})
            else:
                self.html(403, pages.message("Not allowed", reason, session))
            return None
        return session

    def cross_site(self) -> bool:
        site = self.request.headers.get("Sec-Fetch-Site")
        origin = self.request.headers.get("Origin")
        # This listener as the request reached it, and as browsers reach it (a TLS proxy).
        public = urlsplit(self.console.public_url)
        own = {
            f"{self.request.protocol}://{self.request.host}",
            f"{public.scheme}://{public.netloc}",
        }
        return (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and origin not in own  # "null" too: a sandboxed or opaque page
        )

    @property
    def secure(self) -> bool:
        """Cookies are Secure on TLS: here, or at the proxy in front (`console.public_url`)."""
        return self.request.protocol == "https" or self.console.public_url.startswith("https://")

    def same_origin_post(self, session: ConsoleSession | None) -> bool:
        """The CSRF checks of every POST: no cross-site request, and the session's token."""
        token = self.request.headers.get("X-CSRF-Token") or self.get_body_argument(
            "_csrf", default=""
        )
        good = session is not None and bool(token) and hmac.compare_digest(token, session.csrf)
        if self.cross_site() or not good:
            self.json(
                403, {"error": {"code": "CsrfRefused", "reason": "cross-site or no CSRF token"}}
            )
            return False
        return True

    async def record(
        self, principal: Principal | None, decision: str, reason: str, status: int
    ) -> None:
        """One audit row for a console action (sign-in, a served body viewed, an export)."""
        request = IncomingRequest(
            self.request.method or "GET",
            urlsplit(self.request.uri or "").path,
            client=self.request.remote_ip or "",
        )
        code = {401: "ConsoleSignInFailed", 403: "ConsoleRefused"}.get(status)
        await record_admin_flow(
            self.runtime, request, principal, decision, reason, status, code, "console"
        )


def _principal(session: ConsoleSession) -> Principal:
    actor = session.actor
    return Principal(actor.subject, actor.issuer, "console", actor.groups)


class Home(ConsoleHandler):
    def get(self) -> None:
        session = self.session()
        if session is None:
            return self.redirect("/console/login")
        self.redirect("/console/approvals" if session.can_approve else "/console/audit")


class Login(ConsoleHandler):
    async def get(self) -> None:
        then = self.get_query_argument("then", "/console")
        if not then.startswith("/console") or "//" in then or "\\" in then:
            then = "/console"
        try:
            url, pending = await self.console.signin.start(then)
        except SignInFailed as exc:
            return self.html(503, pages.message("Sign-in unavailable", str(exc)))
        self.set_cookie(
            SIGNIN_COOKIE,
            pending.state,
            path="/console/callback",
            httponly=True,
            samesite="Lax",
            secure=self.secure,
            expires_days=None,
        )
        self.redirect(url)


class Callback(ConsoleHandler):
    async def get(self) -> None:
        console = self.console
        state = self.get_query_argument("state", "")
        self.clear_cookie(SIGNIN_COOKIE, path="/console/callback")
        cookie = self.get_cookie(SIGNIN_COOKIE) or ""
        pending = (
            console.signin.take(state) if state and hmac.compare_digest(state, cookie) else None
        )
        error = self.get_query_argument("error", "")
        if pending is None or error:
            why = error or "this sign-in was not started here, or took too long"
            return self.html(400, pages.message("Sign-in failed", why, link="/console/login"))
        try:
            principal = await console.signin.finish(self.get_query_argument("code", ""), pending)
        except SignInFailed as exc:
            await self.record(None, "deny", f"console sign-in failed: {exc}", 401)
            return self.html(401, pages.message("Sign-in failed", str(exc), link="/console/login"))
        config = self.runtime.config
        assert config is not None
        roles = set(roles_of(principal, config))
        can_approve = bool(roles & set(console.settings.approver_roles))
        can_audit = bool(roles & set(console.settings.auditor_roles))
        if not (can_approve or can_audit):
            reason = "console sign-in refused: none of your roles may use the console"
            await self.record(principal, "deny", reason, 403)
            return self.html(
                403,
                pages.message(
                    "No console role",
                    f"{principal.subject} is signed in at the identity provider, but none of "
                    "their roles is an approver or auditor role of this console.",
                ),
            )
        actor = Actor(principal.subject, principal.issuer, tuple(sorted(roles)), principal.groups)
        session = console.sessions.create(actor, can_approve, can_audit)
        self.set_cookie(
            SESSION_COOKIE,
            session.id,
            path="/console",
            httponly=True,
            samesite="Lax",
            secure=self.secure,
            expires_days=None,
        )
        what = "+".join(n for n, ok in (("approver", can_approve), ("auditor", can_audit)) if ok)
        await self.record(principal, "allow", f"console sign-in ({what})", 200)
        self.redirect(pending.then)


class Logout(ConsoleHandler):
    async def post(self) -> None:
        session = self.session()
        if session is None and self.cross_site():
            self.same_origin_post(None)  # answers 403: no one is signed out by a forged form
            return
        if session is not None:
            if not self.same_origin_post(session):
                return
            self.console.sessions.end(session.id)
            await self.record(_principal(session), "allow", "console sign-out", 200)
        self.clear_cookie(SESSION_COOKIE, path="/console")
        self.html(200, pages.message("Signed out", "You are signed out.", link="/console/login"))


class ApprovalsPage(ConsoleHandler):
    def get(self) -> None:
        session = self.signed_in("approve")
        if session is not None:
            self.html(200, pages.approvals(session))


class ApprovalsApi(ConsoleHandler):
    async def get(self) -> None:
        session = self.signed_in("approve", api=True)
        desk = self.runtime.approvals
        if session is None or desk is None:
            return
        found = await desk.store.list("pending")
        actor = session.actor
        items = [
            {"approval": a.summary(), "own": is_requester(a, actor), "detectors": _fired(a.why)}
            for a in found
            if may_decide(a, actor) or is_requester(a, actor)
        ]
        self.json(200, {"approvals": items})


class DecisionApi(ConsoleHandler):
    async def post(self, approval_id: str, verb: str) -> None:
        session = self.signed_in("approve", api=True)
        desk = self.runtime.approvals
        if session is None or desk is None or not self.same_origin_post(session):
            return
        try:
            body = json.loads(self.request.body or b"{}")
            comment = str(body.get("comment", ""))[:2000] if isinstance(body, dict) else ""
        except ValueError:
            return self.json(400, {"error": {"code": "InvalidRequest", "reason": "not JSON"}})
        try:
            approval = await desk.store.decide(
                approval_id, session.actor, verb == "approve", "console", comment
            )
        except ApprovalError as error:
            if error.status != 404:
                await desk.store.refused(approval_id, session.actor, error)
            return self.json(error.status, {"error": {"code": error.code, "reason": error.reason}})
        if approval.status != "pending":
            desk.webhook.post(approval.status, approval, desk.link(approval.id))
        self.json(200, {"approval": approval.summary()})


def _fired(why: str) -> list[str]:
    """The detectors a held answer tripped (their names, never what they found)."""
    found = re.search(r"detectors fired: ([^;]+)", why)
    return [name.strip() for name in found.group(1).split(",")] if found else []


def _filters(handler: ConsoleHandler) -> Filters:
    values = {
        name: handler.get_query_argument(name, "").strip() or None for name in pages.FILTER_FIELDS
    }
    return Filters(**values)


class AuditPage(ConsoleHandler):
    async def get(self) -> None:
        session = self.signed_in("audit")
        if session is None:
            return
        filters = _filters(self)
        desk = self.runtime.approvals

        def read(reader: AuditReader):
            counts = views.chart_counts(reader.flows(filters), [])
            return reader.sessions(filters), counts, views.latest_checkpoint(reader)

        found, counts, checkpoint = await asyncio.to_thread(read_trail, self.runtime, read)
        if desk is not None:
            decided = views.chart_counts([], await desk.store.list(None))
            counts.outcomes, counts.decision_minutes = decided.outcomes, decided.decision_minutes
        specs = {
            "requests": charts.requests_over_time(counts.over_time),
            "denials": charts.denials_by_code(counts.denials),
            "detectors": charts.detector_hits(counts.detectors),
            "readers": charts.top_readers(counts.readers),
            "approvals": charts.approvals_by_outcome(counts.outcomes),
            "decision-time": charts.time_to_decision(counts.decision_minutes),
        }
        drawn = await asyncio.to_thread(lambda: {k: charts.render(v) for k, v in specs.items()})
        console = self.console
        self.html(200, pages.audit(session, filters, found, drawn, checkpoint, console.last_verify))


class TimelinePage(ConsoleHandler):
    async def get(self, session_id: str) -> None:
        session = self.signed_in("audit")
        if session is None:
            return
        flows = await asyncio.to_thread(
            read_trail, self.runtime, lambda r: views.timeline(r, session_id)
        )
        self.html(200, pages.timeline(session, session_id, flows))


class FlowPage(ConsoleHandler):
    async def get(self, flow_id: str) -> None:
        session = self.signed_in("audit")
        if session is None:
            return
        detail = await asyncio.to_thread(
            read_trail, self.runtime, lambda r: views.flow_detail(r, flow_id)
        )
        if detail is None:
            return self.html(404, pages.message("No such flow", f"no flow {flow_id}", session))
        # An auditor reading what was served is a read of trace data: on the record.
        await self.record(_principal(session), "allow", f"console: flow {flow_id} viewed", 200)
        self.html(200, pages.flow(session, detail))


class Export(ConsoleHandler):
    async def get(self) -> None:
        session = self.signed_in("audit")
        if session is None:
            return
        fmt = self.get_query_argument("format", "jsonl")
        if fmt not in pages.EXPORT_FORMATS:
            return self.html(400, pages.message("Export", f"unknown format {fmt}", session))
        filters = _filters(self)
        data = await asyncio.to_thread(read_trail, self.runtime, lambda r: _export(r, filters, fmt))
        await self.record(_principal(session), "allow", f"console: audit export ({fmt})", 200)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="tracegate-audit.{fmt}"')
        self.finish(data)


def _export(reader: AuditReader, filters: Filters, fmt: str) -> bytes:
    rows = reader.flows(filters)
    if fmt in ("jsonl", "csv"):
        return "".join(export(rows, fmt)).encode()
    from tracegate.audit.flows import to_flow, write_har, write_mitm

    flows = (to_flow(row, reader.body(row["flow_id"])) for row in rows)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / f"export.{fmt}"
        (write_har if fmt == "har" else write_mitm)(flows, path)
        return path.read_bytes()


class Verify(ConsoleHandler):
    async def post(self) -> None:
        session = self.signed_in("audit")
        if session is None or not self.same_origin_post(session):
            return
        from tracegate.audit.integrity import verify

        result = await asyncio.to_thread(read_trail, self.runtime, lambda r: verify(r.conn))
        text = (
            f"ok: {result.entries} entries, {result.checkpoints} checkpoints"
            if result.ok
            else f"FAILED: {'; '.join(result.problems[:3])}"
        )
        when = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
        self.console.last_verify = (when, result.ok, text)
        self.redirect("/console/audit", status=303)


class Static(tornado.web.StaticFileHandler):
    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")


def routes(runtime: Runtime) -> list[tuple[str, type, dict[str, Any]]]:
    args = {"runtime": runtime}
    approval = r"(apv_[0-9a-f]+)"
    return [
        (r"/console/?", Home, args),
        (r"/console/login", Login, args),
        (r"/console/callback", Callback, args),
        (r"/console/logout", Logout, args),
        (r"/console/approvals", ApprovalsPage, args),
        (r"/console/api/approvals", ApprovalsApi, args),
        (rf"/console/api/approvals/{approval}/(approve|deny)", DecisionApi, args),
        (r"/console/audit", AuditPage, args),
        (r"/console/sessions/([0-9a-f-]{8,64})", TimelinePage, args),
        (r"/console/flows/([0-9a-f-]{8,64})", FlowPage, args),
        (r"/console/export", Export, args),
        (r"/console/verify", Verify, args),
        (r"/console/static/(console\.(?:js|css))", Static, {"path": str(STATIC)}),
    ]
