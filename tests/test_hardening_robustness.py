"""Adversarial bodies (issue 14, class 6): every pattern is linear in its input, masking has a
time budget that fails closed, and over-deep JSON inside a string is read as text. Against a
real gateway: an adversarial body is masked while other clients' requests keep completing."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time

import httpx
import pytest

from tests.harness import audit_rows
from tests.localhttp import LocalServer
from tracegate.budget import MaskingTimeout, budget
from tracegate.config import ScopeConfig
from tracegate.masking import BodyError, Masker, MaskReport

A_TRACE = "/traces/traces/team-a/tr-a001.json"
# The shapes that made the old finders backtrack: address characters with colons everywhere
# (IPv6), long digit runs with separators (cards, phones), runs of capitals (names), street
# words in a row (addresses), a credential word repeated inside one long word (assignments).
ADVERSARIAL = [
    "1:" * 900 + "x",
    ":" * 1800 + "g",
    "1 " * 2000 + "1-",
    "4" * 4000,
    "Ab " * 1500 + "x",
    "12 Street Road Avenue Lane " * 300,
    "a" * 2000 + "password" * 200 + "=",
    "-----BEGIN PRIVATE KEY-----\n" * 300,
    "aaaa@" * 1000 + "b." * 1000,
    "%4" * 2000 + "\\u00" * 1000,
]


def masker() -> Masker:
    return Masker(ScopeConfig(operations=["GetObject"], prefixes=[""]), b"k")


@pytest.mark.parametrize("text", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_adversarial_strings_mask_within_a_budget_that_holds(text):
    # A budget of 5 s for a few KB: the old finders took 7-8 s here; linear ones take ms.
    with budget(5.0):
        masker().mask_document({"text": text, "nested": json.dumps({"t": text})}, MaskReport())


def test_a_spent_budget_refuses_the_body_rather_than_serving_it():
    body = json.dumps({"traces": [{"text": f"mail dana{i}@acme.io now"} for i in range(5000)]})
    with pytest.raises(MaskingTimeout), budget(0.000_001):
        masker().mask_body(body.encode(), "json", MaskReport())


def test_over_deep_json_inside_a_string_is_masked_as_text():
    deep = "[" * 3000 + '"dana@acme.io"' + "]" * 3000
    out = masker().mask_document({"arguments": deep, "ok": "x"}, MaskReport())
    assert "dana@acme.io" not in out["arguments"] and out["arguments"].startswith("[[[")


def test_a_body_nested_too_deeply_is_refused_not_passed():
    deep = "[" * 3000 + "1" + "]" * 3000
    with pytest.raises(BodyError, match="nested too deeply"):
        masker().mask_body(deep.encode(), "json", MaskReport())


@pytest.fixture(scope="module")
def adversarial_object(store):
    document = {"spans": [{"attributes": {"text": text}} for text in ADVERSARIAL * 4]}
    store.client().put_object(
        Bucket="traces",
        Key="traces/team-a/adversarial.json",
        Body=json.dumps(document).encode(),
        ContentType="application/json",
    )
    return "/traces/traces/team-a/adversarial.json"


def test_other_clients_keep_being_served_while_an_adversarial_body_is_masked(
    make_gateway, issuer, adversarial_object
):
    gateway = make_gateway()
    headers = {"Authorization": f"Bearer {issuer.token('carol', ['support-engineers'])}"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(httpx.get, gateway.url + adversarial_object, headers=headers, timeout=60)
        latencies = []
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
            for _ in range(20):
                started = time.monotonic()
                assert client.get(A_TRACE).status_code == 200
                latencies.append(time.monotonic() - started)
        answer = slow.result(timeout=60)
    assert answer.status_code in (200, 503), answer.text
    assert max(latencies) < 3.0, latencies  # no stall of seconds behind the adversarial body


def test_masking_past_its_budget_is_a_503_with_an_audit_row(make_gateway, issuer, store):
    from tests.test_fail_closed import audited

    gateway = make_gateway(**{"limits.mask_seconds": 0.000_001})
    token = issuer.token("carol", ["support-engineers"])
    response = httpx.get(gateway.url + A_TRACE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "MaskingTimeout" and "not served unmasked" in error["reason"]
    [row] = audited(gateway, response)
    assert row["decision"] == "deny" and row["status"] == 503


class SlowHugeStore(LocalServer):
    """Announces `declared` bytes (over a 1 MiB limit) and then trickles a few bytes a second."""

    def __init__(self, declared: int = 3 * 1024**2) -> None:
        from http.server import BaseHTTPRequestHandler

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(declared))
                self.end_headers()
                try:
                    for _ in range(30):
                        self.wfile.write(b"[" * 16)
                        self.wfile.flush()
                        time.sleep(0.5)
                except OSError:
                    pass

            def log_message(self, *args) -> None:
                pass

        super().__init__(Handler)


@pytest.mark.parametrize(
    "declared",
    [3 * 1024**2, 5 * 1024**3],  # over the limit; far over mitmproxy's backstop (2x + 1 MiB)
    ids=["3MiB", "5GB"],
)
def test_a_huge_slow_body_is_refused_promptly_with_its_flow_id(make_gateway, issuer, declared):
    store = SlowHugeStore(declared)
    try:
        gateway = make_gateway(
            **{"upstream.endpoint": store.endpoint, "limits.max_body_bytes": "1MiB"}
        )
        token = issuer.token("carol", ["support-engineers"])
        started = time.monotonic()
        response = httpx.get(
            gateway.url + A_TRACE, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        elapsed = time.monotonic() - started
    finally:
        store.stop()
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "BodyTooLarge" and error["flow_id"]
    assert elapsed < 5  # the store would take 15 s to trickle its first 500 bytes


class SilentStore(LocalServer):
    """Accepts the request and never answers (until the test stops it)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler

        stop = self.stopping = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stop.wait(30)

            def log_message(self, *args) -> None:
                pass

        super().__init__(Handler)

    def stop(self) -> None:
        self.stopping.set()
        super().stop()


def test_a_silent_store_is_cut_off_after_the_upstream_timeout_with_an_audit_row(
    make_gateway, issuer
):
    store = SilentStore()
    try:
        gateway = make_gateway(
            **{"upstream.endpoint": store.endpoint, "limits.upstream_timeout_seconds": 2}
        )
        token = issuer.token("carol", ["support-engineers"])
        started = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):  # closed, nothing of the store's sent
            httpx.get(
                gateway.url + A_TRACE, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
        elapsed = time.monotonic() - started
        audit = gateway.config.with_name(
            gateway.config.stem.replace("config-", "audit-") + ".sqlite3"
        )
        deadline = time.monotonic() + 5
        while not (rows := audit_rows(audit)) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        store.stop()
    assert 1.5 < elapsed < 10
    [row] = rows
    assert row["decision"] == "error" and row["status"] == 504
    assert (
        row["reason"].startswith("UpstreamTimeout") and "upstream_timeout_seconds" in row["reason"]
    )


def test_the_declared_size_wrapper_refuses_a_mitmproxy_whose_layer_moved(monkeypatch):
    from mitmproxy.proxy.layers import http as http_layer

    from tracegate.proxy import declaredsize

    monkeypatch.delattr(http_layer.HttpStream, "check_body_size")
    with pytest.raises(declaredsize.LayerChanged, match="check_body_size is gone"):
        declaredsize.install()
