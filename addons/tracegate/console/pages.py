"""The console's HTML. Every value from the trail, a token or a request is escaped; the only
markup not written here is the charts' SVG, which vl-convert makes from escaped data. No inline
script or style: the pages load `static/console.js` and `console.css` under a strict CSP."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from tracegate.audit.reader import Filters
from tracegate.audit.tlog import SignedCheckpoint
from tracegate.console.sessions import ConsoleSession
from tracegate.console.views import FlowDetail

FILTER_FIELDS = ("subject", "role", "purpose", "resource_prefix", "decision", "since", "until")
EXPORT_FORMATS = ("jsonl", "csv", "har", "mitm")


def e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, session: ConsoleSession | None, body: str, script: bool = False) -> str:
    nav = ""
    if session is not None:
        links = []
        if session.can_approve:
            links.append('<a href="/console/approvals">Approvals</a>')
        if session.can_audit:
            links.append('<a href="/console/audit">Audit</a>')
        nav = (
            f'<nav>{" ".join(links)}<span class="who">{e(session.actor.subject)}</span>'
            '<form method="post" action="/console/logout" class="inline">'
            f'<input type="hidden" name="_csrf" value="{e(session.csrf)}">'
            '<button type="submit" id="sign-out">Sign out</button></form></nav>'
        )
    meta = f'<meta name="csrf-token" content="{e(session.csrf)}">' if session else ""
    js = '<script src="/console/static/console.js"></script>' if script else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{e(title)} · tracegate</title>"
        '<link rel="stylesheet" href="/console/static/console.css"></head>'
        f"<body><header><h1>tracegate console</h1>{nav}</header><main><h2>{e(title)}</h2>"
        f"{body}</main>{js}</body></html>"
    )


def message(title: str, text: str, session: ConsoleSession | None = None, link: str = "") -> str:
    more = f'<p><a href="{e(link)}">Sign in</a></p>' if link else ""
    return page(title, session, f'<p class="notice">{e(text)}</p>{more}')


def approvals(session: ConsoleSession) -> str:
    body = (
        "<p>Requests waiting for a decision appear here as they arrive. You never see the data, "
        "only the request.</p>"
        '<div id="approvals" data-api="/console/api/approvals" aria-live="polite">'
        "<p>Loading…</p></div>"
    )
    return page("Approvals", session, body, script=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _filters_form(filters: Filters) -> str:
    fields = []
    for name in FILTER_FIELDS:
        label = name.replace("_", " ")
        fields.append(
            f'<label>{e(label)} <input name="{name}" value="{e(getattr(filters, name))}"></label>'
        )
    return (
        f'<form method="get" action="/console/audit" class="filters">{"".join(fields)}'
        '<button type="submit">Filter</button></form>'
    )


def _query(filters: Filters, **extra: str) -> str:
    values = {n: getattr(filters, n) for n in FILTER_FIELDS if getattr(filters, n)}
    return urlencode({**values, **extra})


def audit(
    session: ConsoleSession,
    filters: Filters,
    sessions: list[dict[str, Any]],
    charts: dict[str, str],
    checkpoint: SignedCheckpoint | None,
    verified: tuple[str, bool, str] | None,
) -> str:
    rows = "".join(
        "<tr>"
        f'<td><a href="/console/sessions/{e(s["session_id"])}">{e(s["session_id"][:8])}</a></td>'
        f"<td>{e(s['subject'])}</td><td>{e(s['role'])}</td><td>{e(s['first'])}</td>"
        f"<td>{e(s['last'])}</td><td>{e(s['flows'])}</td><td>{e(s['denied'])}</td></tr>"
        for s in sessions
    )
    table = (
        '<table id="sessions"><thead><tr><th>session</th><th>subject</th><th>role</th>'
        "<th>first</th><th>last</th><th>flows</th><th>denied</th></tr></thead>"
        f"<tbody>{rows or '<tr><td colspan=7>no sessions match</td></tr>'}</tbody></table>"
    )
    exports = " ".join(
        f'<a class="button" href="/console/export?{e(_query(filters, format=f))}">{f.upper()}</a>'
        for f in EXPORT_FORMATS
    )
    figures = "".join(
        f'<figure class="chart" id="chart-{e(name)}">{svg}</figure>' for name, svg in charts.items()
    )
    if checkpoint is None:
        signed = "no signed checkpoint yet"
    else:
        signed = (
            f"latest checkpoint: {e(checkpoint.size)} entries, signed {e(checkpoint.ts)}, root "
            f"<code>{e(checkpoint.root.hex()[:16])}…</code>"
        )
    if verified is None:
        last = "not verified from the console yet"
    else:
        when, ok, text = verified
        last = (
            f'last verify ({e(when)}): <strong class="{"ok" if ok else "bad"}">{e(text)}</strong>'
        )
    integrity = (
        f'<section id="integrity"><h3>Integrity</h3><p>{signed}</p><p id="last-verify">{last}</p>'
        '<form method="post" action="/console/verify">'
        f'<input type="hidden" name="_csrf" value="{e(session.csrf)}">'
        '<button type="submit" id="verify-now">Verify now</button></form></section>'
    )
    body = (
        f"{_filters_form(filters)}<section><h3>Sessions</h3>{table}"
        f'<p class="exports">Export these flows: {exports}</p></section>'
        f'<section id="charts"><h3>At a glance</h3>{figures}</section>{integrity}'
    )
    return page("Audit", session, body)


def timeline(session: ConsoleSession, session_id: str, flows: Iterable[dict[str, Any]]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{e(f['ts'])}</td><td>{e(f['method'])}</td><td>{e(f['operation'])}</td>"
        f"<td>{e(f['resource'] or f['path'])}</td>"
        f'<td class="{e(f["decision"])}">{e(f["decision"])}</td><td>{e(f["status"])}</td>'
        f"<td>{e(f['reason'])}</td>"
        f'<td><a href="/console/flows/{e(f["flow_id"])}">details</a></td></tr>'
        for f in flows
    )
    body = (
        f"<p>Session <code>{e(session_id)}</code>, oldest first.</p>"
        '<table id="timeline"><thead><tr><th>time</th><th>method</th><th>operation</th>'
        "<th>resource</th><th>decision</th><th>status</th><th>reason</th><th></th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    return page("Session timeline", session, body)


def flow(session: ConsoleSession, detail: FlowDetail) -> str:
    row = detail.row
    facts = "".join(
        f"<tr><th>{e(k)}</th><td>{e(row.get(k))}</td></tr>"
        for k in ("ts", "flow_id", "session_id", "subject", "role", "purpose", "method", "path",
                  "operation", "resource", "decision", "code", "reason", "status",
                  "policy_version", "bytes_returned", "returned_sha256", "identity")
        if k in row
    )  # fmt: skip
    masks = "".join(
        f"<tr><td>{e(rule)}</td><td>{e(action)}</td><td>{e(count)}</td></tr>"
        for rule, action, count in detail.masks
    )
    index = (
        f"entry {detail.index} of the Merkle log"
        if detail.index is not None
        else "not yet in the log"
    )
    served = (
        f'<pre id="served">{e(detail.served)}</pre>'
        if detail.served is not None
        else "<p>No body was kept for this flow (only its digests).</p>"
    )
    body = (
        f'<p>{e(index)}</p><table id="flow">{facts}</table><h3>Masks applied</h3>'
        '<table id="masks"><thead><tr><th>rule</th><th>action</th><th>count</th></tr></thead>'
        f"<tbody>{masks or '<tr><td colspan=3>none</td></tr>'}</tbody></table>"
        f"<h3>Served body, exactly as the requester saw it</h3>{served}"
    )
    return page("Flow", session, body)
