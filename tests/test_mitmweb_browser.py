"""mitmweb in a real headless Chromium: an approver sees the held flow and resumes it.

Debian's `chromium` (installed by `make test` through scripts/ensure-chromium.sh), driven by
Playwright with `executable_path`; Playwright never downloads a browser here.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import Browser, Page

from tests.test_approvals import (
    RULES,
    error_of,
    events,
    fetch,
    flow_row,
    in_background,
    rules,
)


@pytest.fixture
def alice(issuer) -> str:
    return issuer.token("alice@example.com", ["support-engineers"])


def open_held_flow(browser: Browser, gateway) -> Page:
    """Open mitmweb, wait for the intercepted flow, select it and show its comment."""
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{gateway.web_port}/?token={gateway.web_password}")
    held = page.locator("tr.intercepted")
    held.first.wait_for(timeout=15000)
    assert "/traces/team-a/tr-a001.json" in held.first.inner_text()
    held.first.click()
    page.get_by_text("Comment", exact=True).click()
    comment = page.get_by_text("HELD for approval apv_")
    comment.wait_for(timeout=5000)
    assert "alice@example.com" in comment.inner_text()
    assert "INC-4711" in comment.inner_text()
    return page


def test_clicking_resume_in_mitmweb_delivers_the_response_and_is_audited(
    make_gateway, browser, alice
):
    gateway = make_gateway(how="web", **{RULES: rules()})
    pending = in_background(fetch, gateway, alice)
    page = open_held_flow(browser, gateway)
    assert not pending.done()
    page.get_by_title("[a]ccept intercepted flow").click()
    response = pending.result(timeout=30)
    assert response.status_code == 200 and response.json()["messages"]
    page.locator("tr.intercepted").first.wait_for(state="detached", timeout=10000)
    page.close()

    recorded = json.loads(flow_row(gateway, response)["approval"])
    assert recorded["status"] == "approved" and recorded["how"] == "mitmweb"
    approved = [e for e in events(gateway, recorded["id"]) if e["event"] == "approved"]
    assert approved[0]["actor"] == "mitmweb-operator"


def test_clicking_abort_in_mitmweb_denies_and_releases_the_client(make_gateway, browser, alice):
    gateway = make_gateway(how="web", **{RULES: rules()})
    pending = in_background(fetch, gateway, alice)
    page = open_held_flow(browser, gateway)
    page.get_by_title("kill intercepted flow [x]").click()
    error = error_of(pending.result(timeout=30), 403, "ApprovalDenied")
    assert "mitmweb" in error["reason"]
    page.close()
    [denied] = [e for e in events_of_latest(gateway) if e["event"] == "denied"]
    assert denied["how"] == "mitmweb"


def events_of_latest(gateway) -> list[dict]:
    import sqlite3

    from tests.test_approvals import audit_path

    conn = sqlite3.connect(audit_path(gateway))
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM approval_events ORDER BY id")]
    finally:
        conn.close()
