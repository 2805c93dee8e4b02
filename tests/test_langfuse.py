"""tracegate in front of Langfuse's public API (rules/langfuse.yaml): a real mitmdump, httpx.

Langfuse cannot run here; `tracegate.demo.langfuse.LocalLangfuse` serves the same paths and
response shapes on loopback, checks the project's basic auth like Langfuse, and records every
request it receives, so these tests also see what reached the store.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.harness import BIN, GatewayProcess, audit_rows, gateway_env, store_gateway
from tracegate.demo.langfuse import LocalLangfuse
from tracegate.demo.setup import LANGFUSE_EXAMPLE
from tracegate.demo.traces import PLANTED_API_KEY


@pytest.fixture(scope="module")
def langfuse() -> Iterator[LocalLangfuse]:
    api = LocalLangfuse().start()
    try:
        yield api
    finally:
        api.stop()


def start_gateway(workdir, langfuse, issuer, env_extra=None, **overrides) -> GatewayProcess:
    return store_gateway(
        workdir, langfuse, issuer, LANGFUSE_EXAMPLE, env_extra=env_extra, **overrides
    ).start()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, langfuse, issuer) -> Iterator[GatewayProcess]:
    process = start_gateway(tmp_path_factory.mktemp("langfuse-gateway"), langfuse, issuer)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def tokens(issuer) -> dict[str, str]:
    return {
        "acme_support": issuer.token("alice@acme", ["support-engineers"], tenant="acme"),
        "acme_analyst": issuer.token("bob@acme", ["data-analysts"], tenant="acme"),
        "no_tenant": issuer.token("nora@acme", ["support-engineers"]),
    }


def get(gateway: GatewayProcess, token: str | None, path: str, **params) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.get(gateway.url + path, headers=headers, params=params, timeout=15)


def test_a_trace_is_served_masked_with_its_observations(gateway, tokens):
    response = get(gateway, tokens["acme_support"], "/api/public/traces/lf-acme-001")
    assert response.status_code == 200, response.text
    trace = response.json()
    assert trace["id"] == "lf-acme-001" and trace["metadata"]["tenant"] == "acme"
    text = json.dumps(trace)
    assert "customer1@acme.example.org" not in text and PLANTED_API_KEY not in text
    assert "reach me at [EMAIL:" in trace["input"]["question"]
    generation, tool = trace["observations"]
    assert "reach me at [EMAIL:" in generation["input"][1]["content"]
    assert tool["input"]["api_key"].startswith("[REDACTED")
    assert response.headers["x-tracegate-decision"] == "allow"
    assert response.headers["content-type"] == "application/json"


def test_the_store_gets_the_gateways_key_pair_and_never_the_clients_credentials(
    gateway, tokens, langfuse
):
    langfuse.requests.clear()
    response = httpx.get(
        gateway.url + "/api/public/traces/lf-acme-002",
        headers={"authorization": f"Bearer {tokens['acme_support']}", "cookie": "session=1"},
        timeout=15,
    )
    assert response.status_code == 200
    (seen,) = langfuse.requests
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    pair = f"{langfuse.public_key}:{langfuse.secret_key}".encode()
    assert headers["authorization"] == "Basic " + base64.b64encode(pair).decode()
    assert "cookie" not in headers and "x-tracegate-token" not in headers
    assert tokens["acme_support"] not in json.dumps(headers)
    # The answer carries none of the store's own headers (the unmasked body's length...).
    assert "x-powered-by" not in response.headers and "server" not in response.headers


def test_a_trace_of_another_tenant_is_refused(gateway, tokens):
    response = get(gateway, tokens["acme_support"], "/api/public/traces/lf-globex-001")
    assert response.status_code == 403
    error = response.json()["error"]
    assert "outside your scope" in error["reason"] and "metadata.tenant" in error["reason"]
    assert "globex" not in response.text.replace("lf-globex-001", "")


def test_every_page_of_a_listing_holds_only_the_tenants_traces(gateway, tokens, langfuse):
    """The store pages over both tenants; each page is filtered, none lets another through."""
    langfuse.requests.clear()
    seen: list[str] = []
    for page in range(1, 5):
        response = get(
            gateway, tokens["acme_support"], "/api/public/traces", page=str(page), limit="4"
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert all(t["metadata"]["tenant"] == "acme" for t in body["data"])
        assert "@globex" not in response.text and "@acme" not in response.text
        seen += [t["id"] for t in body["data"]]
    assert sorted(seen) == [f"lf-acme-{n:03d}" for n in range(1, 8)]
    assert [r["query"]["limit"] for r in langfuse.requests] == ["4"] * 4


def test_the_page_size_is_capped_for_the_role(gateway, tokens, langfuse):
    langfuse.requests.clear()
    response = get(gateway, tokens["acme_support"], "/api/public/traces", limit="100")
    assert response.status_code == 200
    assert langfuse.requests[-1]["query"]["limit"] == "20"  # support's max_limit
    get(gateway, tokens["acme_support"], "/api/public/traces")
    assert langfuse.requests[-1]["query"]["limit"] == "20"  # added when missing


def test_the_analyst_sees_only_the_allowed_fields_of_observations(gateway, tokens):
    response = get(gateway, tokens["acme_analyst"], "/api/public/observations", limit="50")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert len(data) == 14  # two observations for each of acme's seven traces
    for observation in data:
        assert set(observation) <= {"id", "traceId", "name", "model", "usage", "type", "metadata"}
        assert observation["metadata"] == {"tenant": "acme"}
    assert "@acme.example.org" not in response.text and PLANTED_API_KEY not in response.text
    # The store's totals count every tenant's rows (28): not served under a row scope.
    assert response.json()["meta"] == {"page": 1, "limit": 50}


@pytest.mark.parametrize(
    "params",
    [{"userId": "acme-user-3"}, {"sessionId": "s-1"}, {"orderBy": "userId.desc"}],
    ids=["userId", "sessionId", "orderBy-userId"],
)
def test_the_analyst_may_not_filter_or_sort_on_a_field_it_may_not_read(
    gateway, tokens, langfuse, params
):
    # Which traces come back would tell what the hidden field holds (an oracle).
    langfuse.requests.clear()
    response = get(gateway, tokens["acme_analyst"], "/api/public/traces", **params)
    assert response.status_code == 403, response.text
    assert "a field your role may not read" in response.json()["error"]["reason"]
    assert not langfuse.requests  # the store was never asked


def test_filters_on_fields_the_role_may_read_are_served(gateway, tokens):
    analyst = get(gateway, tokens["acme_analyst"], "/api/public/traces", orderBy="timestamp.desc")
    assert analyst.status_code == 200, analyst.text
    support = get(gateway, tokens["acme_support"], "/api/public/traces", userId="acme-user-3")
    assert support.status_code == 200, support.text


def test_the_analyst_may_not_read_a_single_trace(gateway, tokens):
    response = get(gateway, tokens["acme_analyst"], "/api/public/traces/lf-acme-001")
    assert response.status_code == 403
    assert "GetTrace is not allowed for role 'analyst'" in response.json()["error"]["reason"]


@pytest.mark.parametrize(
    ("path", "params", "status", "reason"),
    [
        ("/api/public/sessions", {}, 403, "no route serves GET /api/public/sessions"),
        ("/api/public/traces", {"fields": "io"}, 403, "query parameter 'fields' is not accepted"),
        ("/api/public/traces", {"limit": "500"}, 403, "above the route's maximum of 100"),
        ("/api/public/traces", {"limit": "ten"}, 400, "limit='ten' is not a valid value"),
        ("/api/public/observations", {"type": "SCORE"}, 403, "type='SCORE' is not accepted"),
        ("/api/public/traces/a%252Fb", {}, 400, "percent-encoded twice"),
        ("/api/public/traces/%2E%2E", {}, 400, "'..' segment"),
    ],
    ids=["unlisted", "unknown-param", "over-max", "not-a-number", "bad-value", "double", "dots"],
)
def test_requests_outside_the_route_map_are_refused(gateway, tokens, path, params, status, reason):
    response = get(gateway, tokens["acme_support"], path, **params)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]["reason"]


def test_a_write_is_refused_even_on_a_listed_path(gateway, tokens):
    response = httpx.post(
        gateway.url + "/api/public/traces",
        headers={"authorization": f"Bearer {tokens['acme_support']}"},
        json={"id": "x"},
        timeout=15,
    )
    assert response.status_code == 403
    assert "POST is not served on /api/public/traces" in response.json()["error"]["reason"]


def test_a_token_without_the_partition_claim_is_refused(gateway, tokens):
    response = get(gateway, tokens["no_tenant"], "/api/public/traces")
    assert response.status_code == 403
    assert "no 'tenant' claim" in response.json()["error"]["reason"]


def test_no_token_is_refused_before_the_store_is_asked(gateway, langfuse):
    langfuse.requests.clear()
    response = get(gateway, None, "/api/public/traces")
    assert response.status_code == 401 and langfuse.requests == []


def test_the_stores_not_found_reaches_the_client_reduced_to_its_error_keys(gateway, tokens):
    response = get(gateway, tokens["acme_support"], "/api/public/traces/lf-nope")
    assert response.status_code == 404
    assert response.json() == {
        "message": "Trace lf-nope not found",
        "error": "LangfuseNotFoundError",
    }


def test_the_audit_names_the_route_operation_resource_and_removed_documents(gateway, tokens):
    get(gateway, tokens["acme_support"], "/api/public/traces", page="1", limit="14")
    rows = audit_rows(gateway.workdir / "audit.sqlite3", operation="ListTraces")
    row = rows[-1]
    assert row["resource"] == "http:traces/*" and row["decision"] == "allow"
    masks = json.loads(row["masks"])
    assert masks["listing_removed"] == 7 and masks["documents"] == 7
    single = audit_rows(gateway.workdir / "audit.sqlite3", operation="GetTrace")[0]
    assert single["resource"].startswith("http:traces/lf-")


@pytest.mark.parametrize(
    ("canned", "status", "code"),
    [
        ((200, "text/html", b"<html>hello@example.com</html>"), 502, "UnmaskableContent"),
        ((200, "application/json", b'{"data": [oops'), 502, "UnmaskableContent"),
        ((302, "application/json", b"{}"), 502, "GatewayFailure"),
        ((500, "text/plain", b"stack trace with sk-live-123"), 500, None),
    ],
    ids=["html", "broken-json", "redirect", "server-error"],
)
def test_a_misbehaving_store_never_gets_its_body_through(
    gateway, tokens, langfuse, canned, status, code
):
    langfuse.canned["/api/public/observations"] = canned
    try:
        response = get(gateway, tokens["acme_support"], "/api/public/observations")
    finally:
        langfuse.canned.clear()
    assert response.status_code == status, response.text
    assert canned[2].decode() not in response.text and "sk-live" not in response.text
    if code:
        assert response.json()["error"]["code"] == code
    else:
        assert response.json() == {"error": "store_error", "reason": "the store answered 500"}
    row = audit_rows(gateway.workdir / "audit.sqlite3", operation="ListObservations")[-1]
    assert row["status"] == status


def test_a_route_claim_pins_a_query_parameter_to_the_token(tmp_path, langfuse, issuer):
    gateway = start_gateway(
        tmp_path,
        langfuse,
        issuer,
        **{"upstream.routes.1.claims": {"userId": "sub"}},
    )
    try:
        token = issuer.token("acme-user-3", ["support-engineers"], tenant="acme")
        langfuse.requests.clear()
        mine = get(gateway, token, "/api/public/traces")
        assert mine.status_code == 200, mine.text
        assert [t["id"] for t in mine.json()["data"]] == ["lf-acme-003"]
        assert langfuse.requests[-1]["query"]["userId"] == "acme-user-3"
        other = get(gateway, token, "/api/public/traces", userId="acme-user-4")
        assert other.status_code == 403
        assert "userId 'acme-user-4' is not one of the token's 'sub' values" in other.text
    finally:
        gateway.stop()


def test_wrong_store_credentials_fail_readiness_and_requests(tmp_path, langfuse, issuer, tokens):
    gateway = start_gateway(
        tmp_path, langfuse, issuer, env_extra={"TRACEGATE_LANGFUSE_SECRET_KEY": "sk-lf-wrong"}
    )
    try:
        ready = httpx.get(gateway.admin_url + "/readyz", timeout=10).json()
        assert ready["checks"]["store"] == {
            "ok": False,
            "detail": "store refused the gateway's credentials (401)",
        }
        response = get(gateway, tokens["acme_support"], "/api/public/traces")
        assert response.status_code == 401
        assert response.json() == {"message": "Invalid authorization header"}
    finally:
        gateway.stop()


def test_a_missing_store_secret_stops_start_up_naming_it(tmp_path, langfuse, issuer):
    gateway = store_gateway(tmp_path, langfuse, issuer, LANGFUSE_EXAMPLE)
    del gateway.env["TRACEGATE_LANGFUSE_SECRET_KEY"]
    gateway.start(expect_exit=True)
    assert (
        "upstream.auth.password: environment variable TRACEGATE_LANGFUSE_SECRET_KEY is not set"
        in gateway.log()
    )


def test_an_auditor_sees_exactly_what_was_served(gateway, tokens, langfuse):
    served = get(gateway, tokens["acme_support"], "/api/public/traces/lf-acme-004")
    flow_id = served.headers["x-tracegate-flow"]
    database = gateway.workdir / "audit.sqlite3"
    deadline = time.monotonic() + 10
    while not audit_rows(database, flow_id=flow_id) and time.monotonic() < deadline:
        time.sleep(0.05)

    def replay(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(BIN / "tracegate"), "audit", "replay", str(database), flow_id, *extra],
            capture_output=True,
            text=True,
            env=gateway_env(langfuse),
            timeout=60,
        )

    shown = replay()
    assert shown.returncode == 0 and served.text in shown.stdout
    again = replay("--against-store", "--policy", str(gateway.config))
    assert again.returncode != 0
    assert again.stderr.strip().count("\n") == 0
    assert "replay against the store is available for S3 stores, not http" in again.stderr
