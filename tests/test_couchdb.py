"""tracegate in front of CouchDB (rules/couchdb.yaml): a real mitmdump, pouchdb-server, httpx.

pouchdb-server speaks CouchDB's HTTP API; the `traces` database admits only its members, and
the gateway's user is its only member, so every answer the client gets went through the
gateway's own credentials.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.couchstore import LocalCouch
from tests.harness import GatewayProcess, audit_rows, store_gateway, web_session
from tracegate.demo.setup import COUCHDB_EXAMPLE
from tracegate.demo.traces import PLANTED_API_KEY, PLANTED_CARD, couch_documents


@pytest.fixture(scope="module")
def couch(tmp_path_factory) -> Iterator[LocalCouch]:
    store = LocalCouch()
    store.start(log=tmp_path_factory.mktemp("pouchdb") / "pouchdb.log")
    try:
        store.seed(couch_documents())
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, couch, issuer) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("couchdb-gateway")
    process = store_gateway(workdir, couch, issuer, COUCHDB_EXAMPLE).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def tokens(issuer) -> dict[str, str]:
    return {
        "acme_support": issuer.token("alice@acme", ["support-engineers"], tenant="acme"),
        "acme_analyst": issuer.token("bob@acme", ["data-analysts"], tenant="acme"),
        "security": issuer.token("sam@corp", ["security-leads"], tenant="corp"),
    }


def call(gateway, token, method, path, **kwargs) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    return httpx.request(method, gateway.url + path, headers=headers, timeout=15, **kwargs)


def all_docs(gateway, token, **params) -> httpx.Response:
    query = {"include_docs": "true", **params}
    return call(gateway, token, "GET", "/traces/_all_docs", params=query)


def test_the_store_refuses_anyone_but_the_gateways_user(couch):
    """The set-up is real: without the gateway's credentials CouchDB itself says no."""
    anonymous = httpx.get(f"{couch.endpoint}/traces/acme:tr-acme-001", timeout=10)
    assert anonymous.status_code == 401
    member = httpx.get(
        f"{couch.endpoint}/traces/acme:tr-acme-001", auth=(couch.user, couch.password)
    )
    assert member.status_code == 200 and PLANTED_API_KEY in member.text


def test_a_document_is_served_masked(gateway, tokens):
    response = call(gateway, tokens["acme_support"], "GET", "/traces/acme:tr-acme-001")
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["_id"] == "acme:tr-acme-001" and doc["tenant"] == "acme"
    assert doc["user"]["email"].startswith("hmac:")
    assert doc["metadata"]["api_key"] == "[REDACTED:api-key]"
    assert PLANTED_CARD not in response.text and "user1@acme.example.org" not in response.text
    assert doc["messages"][3]["name"] == "lookup_invoices"  # structure unchanged


def test_a_document_of_another_tenant_is_refused(gateway, tokens):
    response = call(gateway, tokens["acme_support"], "GET", "/traces/globex:tr-globex-001")
    assert response.status_code == 403
    assert "its tenant is not yours" in response.json()["error"]["reason"]
    assert "globex.example.org" not in response.text


def test_every_page_of_all_docs_holds_only_the_tenants_documents(gateway, tokens):
    """Pages of 10 over 24 documents of two tenants: rows of the other tenant are removed."""
    seen: list[str] = []
    for skip in (0, 10, 20):
        response = all_docs(gateway, tokens["acme_support"], limit="10", skip=str(skip))
        assert response.status_code == 200, response.text
        rows = response.json()["rows"]
        assert all(row["doc"]["tenant"] == "acme" for row in rows)
        assert all(row["id"].startswith("acme:") for row in rows)
        assert "globex" not in response.text
        assert "@acme.example.org" not in response.text
        seen += [row["id"] for row in rows]
    assert sorted(seen) == [f"acme:tr-acme-{n:03d}" for n in range(1, 13)]


def test_the_page_size_is_capped_for_the_role(gateway, tokens):
    response = all_docs(gateway, tokens["acme_support"], limit="1000")
    assert response.status_code == 200
    assert len(response.json()["rows"]) == 10  # acme's first ten; support's max_limit is 10
    rows = audit_rows(gateway.workdir / "audit.sqlite3", operation="AllDocs")
    assert "limit capped at 10" in rows[-1]["reason"]


def test_a_mango_query_keeps_its_selector_but_not_other_tenants(gateway, tokens):
    """The analyst asks for every tenant: globex documents come back from the store and are
    removed; the fields are the analyst's allow-list."""
    response = call(
        gateway,
        tokens["acme_analyst"],
        "POST",
        "/traces/_find",
        json={"selector": {"model": "example-model-large"}, "limit": 200},
    )
    assert response.status_code == 200, response.text
    docs = response.json()["docs"]
    assert len(docs) == 12 and {d["tenant"] for d in docs} == {"acme"}
    assert set(docs[0]) <= {
        "_id",
        "tenant",
        "trace_id",
        "created_at",
        "model",
        "latency_ms",
        "usage",
    }
    row = audit_rows(gateway.workdir / "audit.sqlite3", operation="FindDocs")[-1]
    assert json.loads(row["masks"])["listing_removed"] == 12
    assert "limit capped at 50" in row["reason"]


def test_a_mango_query_by_support_waits_for_a_security_lead(gateway, tokens):
    """FindDocs is held for approval (rules/couchdb.yaml); approved through the endpoint."""
    security = {"authorization": f"Bearer {tokens['security']}"}
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(
            call,
            gateway,
            tokens["acme_support"],
            "POST",
            "/traces/_find",
            json={"selector": {"tenant": "acme"}, "limit": 3},
            headers={"x-tracegate-reason": "ticket 4711"},
        )
        deadline = time.monotonic() + 15
        listing: list[dict] = []
        while not listing and time.monotonic() < deadline:
            time.sleep(0.1)
            approvals = httpx.get(gateway.admin_url + "/approvals", headers=security, timeout=10)
            listing = approvals.json()["approvals"]
        (approval,) = listing
        assert approval["request"]["operation"] == "FindDocs"
        assert approval["request"]["resource"] == "http:traces/*"
        decided = httpx.post(
            f"{gateway.admin_url}/approvals/{approval['id']}/approve",
            headers=security,
            json={"comment": "ok for the ticket"},
            timeout=10,
        )
        assert decided.status_code == 200, decided.text
        answer = pending.result(timeout=30)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["docs"]) == 3
    assert answer.headers["x-tracegate-approval"] == str(approval["id"])


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "reason"),
    [
        ("GET", "/traces/_changes", {"params": {"include_docs": "true"}}, 403, "no route serves"),
        ("GET", "/traces/%5Fchanges", {}, 403, "no route serves"),
        ("GET", "/traces/_design/views", {}, 403, "no route serves"),
        ("GET", "/_all_dbs", {}, 403, "no route serves"),
        ("GET", "/_users/_all_docs", {"params": {"include_docs": "true"}}, 403, "no route"),
        ("GET", "/traces/_all_docs", {}, 400, "needs query parameter(s) include_docs"),
        (
            "GET",
            "/traces/acme:tr-acme-001",
            {"params": {"attachments": "true"}},
            403,
            "'attachments' is not accepted",
        ),
        ("PUT", "/traces/acme:new", {"json": {"tenant": "acme"}}, 403, "PUT is not served"),
        ("DELETE", "/traces/acme:tr-acme-001", {}, 403, "DELETE is not served"),
        ("POST", "/traces/_bulk_get", {"json": {"docs": []}}, 403, "no route serves"),
        (
            "POST",
            "/traces/_find",
            {"json": {"selector": {}, "execution_stats": True}},
            403,
            "body key(s) execution_stats are not accepted",
        ),
        ("POST", "/traces/_find", {"content": b"selector=1"}, 400, "not JSON"),
    ],
    ids=[
        "changes",
        "encoded-underscore",
        "design",
        "all-dbs",
        "users-db",
        "no-include-docs",
        "attachments",
        "put",
        "delete",
        "bulk-get",
        "unknown-body-key",
        "not-json",
    ],
)
def test_requests_outside_the_route_map_are_refused(
    gateway, tokens, method, path, kwargs, status, reason
):
    response = call(gateway, tokens["acme_analyst"], method, path, **kwargs)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]["reason"]


def test_an_encoded_document_id_reaches_the_store_as_the_same_document(gateway, tokens):
    response = call(gateway, tokens["acme_support"], "GET", "/traces/acme%3Atr-acme-002")
    assert response.status_code == 200 and response.json()["_id"] == "acme:tr-acme-002"


def test_the_stores_not_found_reaches_the_client(gateway, tokens):
    response = call(gateway, tokens["acme_support"], "GET", "/traces/acme:missing")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "reason": "missing"}


def test_readiness_reads_the_database_with_the_gateways_credentials(gateway):
    ready = httpx.get(gateway.admin_url + "/readyz", timeout=10).json()
    assert ready["checks"]["store"] == {"ok": True, "detail": "store answered 200 at /traces"}


def test_mitmweb_never_shows_the_gateways_store_password(tmp_path, couch, issuer, tokens):
    """The flow keeps no Authorization once the store has answered: what mitmweb serves."""
    web = store_gateway(tmp_path, couch, issuer, COUCHDB_EXAMPLE, how="web").start()
    try:
        response = call(web, tokens["acme_support"], "GET", "/traces/acme:tr-acme-003")
        assert response.status_code == 200
        with web_session(web) as session:
            flows = session.get("/flows.json").json()
        dumped = json.dumps(flows)
        assert couch.password not in dumped and "Basic " not in dumped
        assert tokens["acme_support"] not in dumped
    finally:
        web.stop()


def test_a_projection_without_the_fields_scope_checks_need_returns_nothing(gateway, tokens):
    """_find's `fields` can leave out `_id` and `tenant`; such documents cannot be placed, so
    they are removed rather than trusted."""
    response = call(
        gateway,
        tokens["acme_analyst"],
        "POST",
        "/traces/_find",
        json={"selector": {"tenant": "acme"}, "fields": ["model", "latency_ms"]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["docs"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"selector": {"user.email": {"$regex": "^a"}}},
        {"selector": {"metadata": {"api_key": {"$regex": "^sk"}}}},
        {"selector": {"$or": [{"model": "x"}, {"messages": {"$elemMatch": {"content": "hi"}}}]}},
        {"selector": {"model": "x"}, "sort": [{"user.name": "asc"}]},
    ],
    ids=["dotted", "nested", "inside-or", "sort"],
)
def test_a_mango_query_naming_a_field_the_role_may_not_read_is_refused(gateway, tokens, body):
    response = call(gateway, tokens["acme_analyst"], "POST", "/traces/_find", json=body)
    assert response.status_code == 403, response.text
    assert "a field your role may not read" in response.json()["error"]["reason"]


def test_a_mango_query_on_readable_fields_and_operators_is_served(gateway, tokens):
    body = {"selector": {"$and": [{"model": {"$regex": "large"}}, {"usage.total": {"$gt": 0}}]}}
    response = call(gateway, tokens["acme_analyst"], "POST", "/traces/_find", json=body)
    assert response.status_code == 200, response.text
