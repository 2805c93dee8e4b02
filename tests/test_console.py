"""The console in a real headless Chromium (Debian's, driven by Playwright): approvers and
auditors sign in through the demo issuer's authorization code flow (PKCE), decide and read.
Each test saves a screenshot of every page it sees in its temp dir."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.test_approvals import PLANTED_API_KEY, RULES, error_of, fetch, in_background, rules

CONSOLE = {
    "console.enabled": True,
    "console.approver_roles": ["security"],
    "console.auditor_roles": ["security", "analyst"],
}


@pytest.fixture
def console_gateway(make_gateway, issuer):
    for name, subject, groups in (
        ("sec1", "sec1@example.com", ["security-leads"]),
        ("dana", "dana@example.com", ["support-engineers", "security-leads"]),
        ("bob", "bob@example.com", ["data-analysts"]),
        ("alice", "alice@example.com", ["support-engineers"]),
    ):
        issuer.add_user(name, subject, groups)
    return make_gateway(how="run", **{RULES: rules(wait=30), **CONSOLE})


class Shots:
    def __init__(self, tmp_path) -> None:
        self.folder = tmp_path / "screenshots"
        self.folder.mkdir()
        self.n = 0

    def __call__(self, page: Page, name: str) -> None:
        self.n += 1
        page.screenshot(path=str(self.folder / f"{self.n:02d}-{name}.png"), full_page=True)


@pytest.fixture
def shot(tmp_path) -> Shots:
    return Shots(tmp_path)


def sign_in(browser: Browser, gateway, user: str, shot: Shots, path: str = "/console"):
    """A fresh browser profile signs in as `user` at the demo issuer's form."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(gateway.admin_url + path)
    page.wait_for_selector("text=Demo identity provider")
    shot(page, f"{user}-idp")
    page.click(f"button[value={user}]")
    page.wait_for_load_state("networkidle")
    return context, page


def test_an_approver_signs_in_approves_a_waiting_request_and_the_client_gets_the_masked_answer(
    console_gateway, browser, tokens, shot
):
    gateway = console_gateway
    waiting = in_background(fetch, gateway, tokens["alice"])
    context, page = sign_in(browser, gateway, "sec1", shot)
    assert page.url.endswith("/console/approvals")
    card = page.locator(".card").first
    card.wait_for(timeout=15000)
    shot(page, "approvals")
    assert "alice@example.com" in card.inner_text()
    assert "incident" in card.inner_text() and "INC-4711" in card.inner_text()
    assert "held before the answer was read" in card.inner_text()  # no detector ran yet
    assert not waiting.done()
    card.locator("textarea").fill("ok for INC-4711")
    card.locator("button.approve").click()
    page.wait_for_selector("text=recorded: approved")
    shot(page, "approved")
    response = waiting.result(timeout=30)
    assert response.status_code == 200, response.text
    assert PLANTED_API_KEY not in response.text
    approval = response.headers["x-tracegate-approval"]
    detail = httpx.get(
        f"{gateway.admin_url}/approvals/{approval}",
        headers={"Authorization": f"Bearer {tokens['sec1']}"},
        timeout=10,
    ).json()
    [vote] = detail["approval"]["votes"]
    assert (vote["subject"], vote["how"], vote["comment"]) == (
        "sec1@example.com",
        "console",
        "ok for INC-4711",
    )
    # The page carries a strict policy: no inline script, nothing from elsewhere.
    csp = page.request.get(gateway.admin_url + "/console/approvals").headers
    assert "script-src 'self'" in csp["content-security-policy"]
    assert "unsafe-inline" not in csp["content-security-policy"]
    # Signing out ends the session: the next page asks for a sign-in again.
    page.click("#sign-out")
    page.wait_for_load_state("networkidle")
    assert "You are signed out." in page.content(), page.content()
    shot(page, "signed-out")
    page.goto(gateway.admin_url + "/console/approvals")
    page.wait_for_selector("text=Demo identity provider")
    context.close()


def test_a_requester_who_approves_cannot_approve_their_own_request(
    console_gateway, browser, tokens, shot
):
    gateway = console_gateway
    waiting = in_background(fetch, gateway, tokens["dual"], **{"X-Tracegate-Role": "support"})
    context, page = sign_in(browser, gateway, "dana", shot)
    card = page.locator(".card").first
    card.wait_for(timeout=15000)
    shot(page, "own-request")
    assert "You asked for this" in card.inner_text()
    assert card.locator("button.approve").is_disabled()
    # Even sent by hand, with the CSRF token, the decision is refused by the same rules.
    approval = card.get_attribute("data-approval")
    answer = page.evaluate(
        """async (id) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const r = await fetch('/console/api/approvals/' + id + '/approve', {method: 'POST',
                headers: {'X-CSRF-Token': csrf, 'Content-Type': 'application/json'}, body: '{}'});
            return [r.status, await r.json()];
        }""",
        approval,
    )
    assert answer[0] == 403 and answer[1]["error"]["code"] == "SelfApproval"
    assert not waiting.done()
    context.close()
    error_of(waiting.result(timeout=60), 403, "ApprovalPending")


def test_an_auditor_sees_the_session_the_served_body_and_the_charts(
    console_gateway, browser, issuer, shot
):
    gateway = console_gateway
    frank = issuer.token("frank@example.com", ["support-engineers"])
    served = httpx.get(
        gateway.url + "/traces/traces/team-a/tr-a001.json",
        headers={"Authorization": f"Bearer {frank}"},
        timeout=30,
    )
    assert served.status_code == 200
    httpx.get(gateway.url + "/traces/traces/team-b/tr-b001.json",
              headers={"Authorization": f"Bearer {frank}"}, timeout=30)  # fmt: skip
    httpx.get(gateway.url + "/traces/traces/team-a/tr-a001.json", timeout=30)  # no token
    context, page = sign_in(browser, gateway, "bob", shot)
    assert page.url.endswith("/console/audit")
    shot(page, "audit")
    sessions = page.locator("#sessions tbody tr")
    assert "frank@example.com" in sessions.all_inner_texts().__str__()
    # The charts are drawn, with one mark per data point, labelled with its values.
    requests = page.locator("#chart-requests svg [aria-roledescription=bar]")
    assert requests.count() >= 2  # allow and deny bars
    labels = " ".join(requests.evaluate_all("ns => ns.map(n => n.getAttribute('aria-label'))"))
    assert "decision: allow" in labels and "decision: deny" in labels
    denials = page.locator("#chart-denials svg [aria-roledescription=bar]")
    denial_labels = denials.evaluate_all("ns => ns.map(n => n.getAttribute('aria-label'))")
    assert any("AccessDenied" in a for a in denial_labels), denial_labels
    assert any("Unauthenticated" in a for a in denial_labels)
    assert (
        page.locator(
            "#chart-readers svg [aria-roledescription=bar][aria-label*='frank@example.com']"
        ).count()
        == 1
    )
    assert page.locator("#chart-detectors svg").count() == 1
    # Filters narrow the sessions; a session's timeline leads to the flow as served.
    page.fill("input[name=subject]", "frank@example.com")
    page.click("text=Filter")
    page.wait_for_load_state("networkidle")
    page.locator("#sessions tbody tr a").first.click()
    page.wait_for_selector("#timeline")
    shot(page, "timeline")
    assert page.locator("#timeline tbody tr").count() == 2
    page.locator("#timeline tbody tr:has(td.allow) a").click()
    page.wait_for_selector("#served")
    shot(page, "flow")
    assert page.locator("#served").inner_text().strip() == served.text.strip()
    assert "entry " in page.locator("main").inner_text()
    # Exports honour the filters.
    exported = page.request.get(
        gateway.admin_url + "/console/export?format=jsonl&subject=frank%40example.com"
    )
    lines = exported.text().splitlines()
    assert exported.status == 200 and len(lines) == 2
    assert {json.loads(line)["subject"] for line in lines} == {"frank@example.com"}
    har = page.request.get(gateway.admin_url + "/console/export?format=har&decision=allow")
    assert har.status == 200 and json.loads(har.text())["log"]["entries"]
    # An analyst audits but does not approve.
    page.goto(gateway.admin_url + "/console/approvals")
    assert "do not let you approve" in page.inner_text("main")
    # Verify from the console.
    page.goto(gateway.admin_url + "/console/audit")
    page.click("#verify-now")
    page.wait_for_selector("#last-verify strong.ok")
    shot(page, "verified")
    context.close()


def test_a_user_without_a_console_role_is_refused(console_gateway, browser, shot):
    context, page = sign_in(browser, console_gateway, "alice", shot)
    shot(page, "refused")
    assert "No console role" in page.inner_text("main")
    page.goto(console_gateway.admin_url + "/console/audit")
    page.wait_for_selector("text=Demo identity provider")  # no session was made
    context.close()


def test_a_cross_site_post_without_the_csrf_token_is_refused(console_gateway, browser, shot):
    gateway = console_gateway
    context, page = sign_in(browser, gateway, "sec1", shot)
    # A page of another origin (the cookie is sent: 127.0.0.1 is the same site) posts a form.
    attacker = context.new_page()
    attacker.set_content(
        f'<form id="f" method="post" action="{gateway.admin_url}/console/logout"></form>'
    )
    with attacker.expect_navigation():
        attacker.evaluate("document.getElementById('f').submit()")
    shot(attacker, "cross-site")
    assert "CsrfRefused" in attacker.content()
    # Same origin but without the token: refused too; and the session still stands.
    answer = page.evaluate(
        "async () => (await fetch('/console/api/approvals/apv_00/approve', {method: 'POST'}))"
        ".status"
    )
    assert answer == 403
    page.goto(gateway.admin_url + "/console/approvals")
    assert page.url.endswith("/console/approvals")
    context.close()


def test_sign_in_rejects_a_callback_this_browser_did_not_start(console_gateway):
    answer = httpx.get(
        console_gateway.admin_url + "/console/callback?code=x&state=forged", timeout=10
    )
    assert answer.status_code == 400
    assert re.search(r"not started here", answer.text)
