"""The HTTP store kind without processes: route maps, their config errors, answers masked.

The end-to-end tests (tests/test_couchdb.py, tests/test_langfuse.py) run the shipped route
maps through a real gateway; these pin the rules of the route map and of the answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.harness import REPO
from tracegate.config import ConfigError, GatewayConfig, load_config
from tracegate.denial import Denial
from tracegate.exchange import Exchange, IncomingRequest
from tracegate.grant import Grant
from tracegate.identity.principal import Principal
from tracegate.masking import Masker
from tracegate.stores.http_adapter import HttpStore

COUCHDB = REPO / "rules" / "couchdb.yaml"
ENV = {"TRACEGATE_COUCHDB_USER": "gw", "TRACEGATE_COUCHDB_PASSWORD": "pw"}
# A search cluster: hits inside hits, each document's place from its own fields.
SEARCH_ROUTE = {
    "operation": "Search",
    "method": "POST",
    "path": "/{index}/_search",
    "params": {"index": "traces-[a-z]+"},
    "body": "json",
    "body_keys": ["query", "size", "from"],
    "resource": "{index}/",
    "document_resource": "{index}/{doc.team}/{doc.trace_id}",
    "documents": ["$.hits.hits[*]._source"],
    "metadata": ["$.took", "$.hits.hits[*]._id"],
    "whole_result": ["$.hits.total"],
    "page_size": "size",
}


def couch_config(tmp_path: Path, edit=None) -> Path:
    data = yaml.safe_load(COUCHDB.read_text())
    if edit:
        edit(data)
    path = tmp_path / "couch.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def store(tmp_path, monkeypatch, edit=None) -> HttpStore:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return HttpStore.from_config(load_config(couch_config(tmp_path, edit)))


def exchange_for(
    http_store: HttpStore,
    method: str,
    path: str,
    query=(),
    body=b"",
    role="support",
    purpose="debugging",
    **claims,
) -> Exchange:
    request = IncomingRequest(method, path, tuple(query), body=body)
    exchange = Exchange("flow-1", request, "v1")
    exchange.principal = Principal("alice", "iss", "demo", claims={"tenant": "acme", **claims})
    exchange.access = http_store.parse(request)
    config: GatewayConfig = http_store.config
    exchange.grant = Grant(role, purpose, config.roles[role].scopes[purpose])
    http_store.narrow(exchange)
    return exchange


def answer(http_store: HttpStore, exchange: Exchange, body, status=200, content_type=None):
    grant = exchange.grant
    assert grant is not None
    masker = Masker(grant.scope, b"k" * 16)
    raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
    headers = {"content-type": content_type or "application/json"}
    return http_store.respond(exchange, status, headers, raw, {"x-tracegate-flow": "f"}, masker)


# -- config --------------------------------------------------------------------------------


def route(data, n=0) -> dict:
    return data["upstream"]["routes"][n]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: route(d).update(params={"tenant": "x"}),
            "upstream.routes[0]: params.tenant: not a parameter of path '/{db}/_all_docs'",
        ),
        (
            lambda d: route(d).update(resource="{db}/{limit}"),
            "upstream.routes[0]: resource: {limit} is not a path parameter or required query",
        ),
        (
            lambda d: route(d).update(resource="{doc._id}"),
            "upstream.routes[0]: resource: {doc._id} is not a path parameter",
        ),
        (
            lambda d: route(d, 1).update(body_keys=[]),
            "upstream.routes[1]: body_keys: list the JSON body keys",
        ),
        (
            lambda d: route(d, 1).update(page_size="size"),
            "upstream.routes[1]: page_size: 'size' is not a parameter it accepts",
        ),
        (
            lambda d: route(d).update(path="/{db}/x{id}"),
            "upstream.routes[0]: path segment 'x{id}': a parameter is a whole {name}",
        ),
        (
            lambda d: route(d).update(params={"db": "(unclosed"}),
            "upstream.routes[0].params: invalid regular expression '(unclosed'",
        ),
        (
            lambda d: route(d).update(claims={"owner": "sub"}),
            "upstream.routes[0]: claims.owner: not a path or query parameter",
        ),
        (
            lambda d: route(d).update(documents=["rows[*]"]),
            "upstream.routes[0].documents: JSONPath 'rows[*]' must start with '$'",
        ),
        (
            lambda d: route(d).update(metadata=["total_rows"]),
            "upstream.routes[0].metadata: JSONPath 'total_rows' must start with '$'",
        ),
        (
            lambda d: route(d)["query"].update(
                descending={"pattern": "[a-z]+", "field": "$.{field}"}
            ),
            "upstream.routes[0].query.descending: field uses {field}: give a pattern with a group",
        ),
        (
            lambda d: route(d, 2).update(operation="AllDocs"),
            "upstream: routes: operation 'AllDocs' is named by two routes",
        ),
        (
            lambda d: d["upstream"]["auth"].pop("password"),
            "upstream.auth: scheme 'basic' needs password",
        ),
        (
            lambda d: d["upstream"]["auth"].update(value={"env": "X"}),
            "upstream.auth: value is not a setting for scheme 'basic'",
        ),
        (
            lambda d: d["upstream"].update(
                auth={"scheme": "header", "header": "Host", "value": {"env": "X"}}
            ),
            "upstream.auth: header 'Host' is set by the gateway itself",
        ),
        (
            lambda d: d["upstream"]["auth"].update(password={"env": "A", "file": "/b"}),
            "upstream.auth.password: set exactly one of env: NAME or file: PATH",
        ),
        (
            lambda d: d["roles"]["support"]["scopes"]["debugging"].update(
                operations=["GetDoc", "Put"]
            ),
            "roles.support.scopes.debugging.operations: Put is not a route of this http store "
            "(allowed: AllDocs, FindDocs, GetDoc)",
        ),
        (
            lambda d: d["roles"]["support"]["scopes"]["debugging"].update(tables=["t"]),
            "roles.support.scopes.debugging.tables: not a setting for a http store",
        ),
        (
            lambda d: d["roles"]["support"]["scopes"]["debugging"].update(prefixes=[]),
            "roles.support.scopes.debugging.prefixes: list the resource prefixes",
        ),
        (
            lambda d: d["roles"]["support"]["scopes"]["debugging"]["approvals"][0]["when"].update(
                max_keys_over=10
            ),
            "roles.support.scopes.debugging.approvals[0].when.max_keys_over: only for S3",
        ),
    ],
    ids=[
        "param-not-in-path",
        "resource-optional-query",
        "resource-doc-field",
        "post-without-keys",
        "page-size-unknown",
        "partial-segment",
        "bad-regex",
        "claim-unknown-param",
        "jsonpath",
        "metadata-jsonpath",
        "query-field-group",
        "duplicate-operation",
        "basic-without-password",
        "value-with-basic",
        "gateway-header",
        "two-sources",
        "scope-unknown-operation",
        "scope-tables",
        "scope-no-prefixes",
        "max-keys-over",
    ],
)
def test_a_bad_route_map_is_one_line_naming_the_file_and_key(tmp_path, edit, expected):
    with pytest.raises(ConfigError) as error:
        load_config(couch_config(tmp_path, edit))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'couch.yaml'}: ") and "\n" not in message
    assert expected in message, message


def test_a_missing_secret_file_stops_start_up_naming_the_key(tmp_path, monkeypatch):
    edit = lambda d: d["upstream"]["auth"].update(password={"file": str(tmp_path / "nope")})  # noqa: E731
    with pytest.raises(ConfigError, match=r"^upstream.auth.password: cannot read .*nope"):
        store(tmp_path, monkeypatch, edit)


def test_secrets_from_a_file_and_a_header_scheme_become_the_stores_header(tmp_path, monkeypatch):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token\n")

    def header_auth(data):
        data["upstream"]["auth"] = {
            "scheme": "header",
            "header": "X-Api-Key",
            "prefix": "Key ",
            "value": {"file": str(secret)},
        }

    http_store = store(tmp_path, monkeypatch, header_auth)
    exchange = exchange_for(http_store, "GET", "/traces/acme:1")
    upstream = http_store.upstream_request(exchange)
    assert upstream.headers["x-api-key"] == "Key s3cr3t-token"
    assert "authorization" not in upstream.headers
    assert "x-api-key" in http_store.secret_headers  # hidden from the flow once sent


def test_basic_auth_is_built_from_the_environment(tmp_path, monkeypatch):
    http_store = store(tmp_path, monkeypatch)
    upstream = http_store.upstream_request(exchange_for(http_store, "GET", "/traces/acme:1"))
    assert upstream.headers["authorization"] == "Basic Z3c6cHc="  # gw:pw
    assert upstream.headers["accept"] == "application/json"


# -- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "status", "reason"),
    [
        ("GET", "/traces/", (), 400, "empty segment"),
        ("GET", "/traces//x", (), 400, "empty segment"),
        ("GET", "/traces/a%00b", (), 400, "NUL byte"),
        ("GET", "/traces/%ff", (), 400, "not valid UTF-8"),
        ("GET", "/traces/_all_docs", (("include_docs", "true"),) * 2, 400, "given twice"),
        ("GET", "/other/acme:1", (), 403, "no route serves GET /other/acme:1"),
        ("HEAD", "/traces/acme:1", (), 403, "HEAD is not served"),
    ],
)
def test_requests_the_route_map_does_not_describe_are_refused(
    tmp_path, monkeypatch, method, path, query, status, reason
):
    http_store = store(tmp_path, monkeypatch)
    with pytest.raises(Denial) as denial:
        http_store.parse(IncomingRequest(method, path, query))
    assert denial.value.status == status and reason in denial.value.reason


def test_a_path_parameter_is_decoded_once_and_re_encoded_for_the_store(tmp_path, monkeypatch):
    http_store = store(tmp_path, monkeypatch)
    exchange = exchange_for(http_store, "GET", "/traces/acme%2Fweird%20id")
    assert exchange.access is not None and exchange.access.key == "traces/acme/weird id"
    assert http_store.upstream_request(exchange).path == "/traces/acme%2Fweird%20id"


def test_the_page_size_in_a_json_body_is_capped_and_added(tmp_path, monkeypatch):
    http_store = store(tmp_path, monkeypatch)
    body = json.dumps({"selector": {"tenant": "acme"}}).encode()
    exchange = exchange_for(
        http_store, "POST", "/traces/_find", body=body, role="analyst", purpose="analytics"
    )
    sent = json.loads(http_store.upstream_request(exchange).body)
    assert sent == {"selector": {"tenant": "acme"}, "limit": 50}


def test_a_route_claim_fills_a_missing_parameter_and_refuses_another_value(tmp_path, monkeypatch):
    def claim_skip(data):
        route(data)["claims"] = {"startkey": "tenant"}

    http_store = store(tmp_path, monkeypatch, claim_skip)
    exchange = exchange_for(http_store, "GET", "/traces/_all_docs", [("include_docs", "true")])
    assert "startkey=acme" in http_store.upstream_request(exchange).path
    with pytest.raises(Denial, match="startkey 'globex' is not one of the token's 'tenant'"):
        exchange_for(
            http_store,
            "GET",
            "/traces/_all_docs",
            [("include_docs", "true"), ("startkey", "globex")],
        )
    with pytest.raises(Denial, match="give startkey: the token's 'tenant' claim has no single"):
        exchange_for(
            http_store, "GET", "/traces/_all_docs", [("include_docs", "true")], tenant=["a", "b"]
        )


# -- answers -------------------------------------------------------------------------------


def test_rows_outside_the_scope_go_with_their_documents(tmp_path, monkeypatch):
    http_store = store(tmp_path, monkeypatch)
    exchange = exchange_for(http_store, "GET", "/traces/_all_docs", [("include_docs", "true")])
    rows = [
        {"id": "acme:1", "doc": {"_id": "acme:1", "tenant": "acme", "note": "x"}},
        {"id": "globex:1", "doc": {"_id": "globex:1", "tenant": "globex"}},
        {"id": "acme:2", "doc": {"_id": "acme:2", "note": "no tenant field"}},
        {"id": "acme:3", "doc": {"_id": "acme:3", "tenant": ["acme"]}},  # not a string
        {"id": "acme:4", "doc": {"_id": "acme:4", "tenant": "acme"}},
    ]
    result = answer(http_store, exchange, {"total_rows": 5, "rows": rows})
    served = json.loads(result.body)
    assert [r["id"] for r in served["rows"]] == ["acme:1", "acme:4"]
    assert exchange.report.listing_removed == 3 and exchange.report.documents == 2
    assert result.replace_headers and result.headers["content-type"] == "application/json"


def test_the_envelope_around_the_documents_is_scanned_too(tmp_path, monkeypatch):
    http_store = store(tmp_path, monkeypatch)
    body = json.dumps({"selector": {}}).encode()
    exchange = exchange_for(
        http_store, "POST", "/traces/_find", body=body, role="analyst", purpose="analytics"
    )
    result = answer(
        http_store,
        exchange,
        {
            "docs": [{"_id": "acme:1", "tenant": "acme", "model": "m", "secret": "x"}],
            "warning": "slow query by ops@acme.example.org",
            "bookmark": "g1AAAA",
        },
    )
    served = json.loads(result.body)
    assert served["docs"] == [{"_id": "acme:1", "tenant": "acme", "model": "m"}]
    assert "ops@acme.example.org" not in served["warning"]
    # The bookmark names the store's last row, maybe another tenant's: not under a partition.
    assert "bookmark" not in served
    assert exchange.report.to_dict()["rules"]["whole-result"]["paths"] == ["$.bookmark"]


def test_documents_are_placed_by_their_own_fields_in_a_search_answer(tmp_path, monkeypatch):
    def search(data):
        data["upstream"]["routes"].append(SEARCH_ROUTE)
        scope = data["roles"]["support"]["scopes"]["debugging"]
        scope.update(operations=["Search"], prefixes=["traces-prod/team-a/"], approvals=[])
        del scope["partition"]

    http_store = store(tmp_path, monkeypatch, search)
    body = json.dumps({"query": {"match_all": {}}, "size": 500}).encode()
    exchange = exchange_for(http_store, "POST", "/traces-prod/_search", body=body)
    assert json.loads(http_store.upstream_request(exchange).body)["size"] == 10
    hits = [
        {"_id": "1", "_source": {"team": "team-a", "trace_id": "t1", "user": {"email": "a@b.co"}}},
        {"_id": "2", "_source": {"team": "team-b", "trace_id": "t2"}},
        {"_id": "3", "_source": {"trace_id": "t3"}},
    ]
    result = answer(http_store, exchange, {"took": 3, "hits": {"total": 3, "hits": hits}})
    served = json.loads(result.body)
    assert [h["_id"] for h in served["hits"]["hits"]] == ["1"]
    assert served["hits"]["hits"][0]["_source"]["user"]["email"].startswith("hmac:")
    assert served["took"] == 3 and "total" not in served["hits"]  # two hits were not yours


def test_envelope_parts_the_route_does_not_name_are_dropped(tmp_path, monkeypatch):
    # Another tenant's trace riding in an envelope key the route map does not name.
    http_store = store(tmp_path, monkeypatch)
    exchange = exchange_for(http_store, "GET", "/traces/_all_docs", [("include_docs", "true")])
    leak = {"_id": "globex:9", "tenant": "globex", "note": "globex secret"}
    rows = [
        {
            "id": "acme:1",
            "key": "acme:1",
            "value": {"rev": "1-a"},
            "extra": leak,
            "doc": {"_id": "acme:1", "tenant": "acme"},
        }
    ]
    body = {
        "total_rows": 9,
        "offset": 3,
        "rows": rows,
        "included": [leak],
        "meta": {"related": leak},
    }
    served = json.loads(answer(http_store, exchange, body).body)
    assert served == {
        "rows": [
            {
                "id": "acme:1",
                "key": "acme:1",
                "value": {"rev": "1-a"},
                "doc": {"_id": "acme:1", "tenant": "acme"},
            }
        ]
    }
    rules = exchange.report.to_dict()["rules"]
    assert rules["envelope-unlisted"]["count"] == 3 and rules["whole-result"]["count"] == 2


def test_the_whole_results_totals_are_served_when_the_scope_cannot_filter(tmp_path, monkeypatch):
    def unpartitioned(data):
        del data["roles"]["support"]["scopes"]["debugging"]["partition"]

    http_store = store(tmp_path, monkeypatch, unpartitioned)
    exchange = exchange_for(http_store, "GET", "/traces/_all_docs", [("include_docs", "true")])
    rows = [{"id": "acme:1", "doc": {"_id": "acme:1", "tenant": "acme"}}]
    served = json.loads(
        answer(http_store, exchange, {"total_rows": 9, "offset": 3, "rows": rows}).body
    )
    assert served["total_rows"] == 9 and served["offset"] == 3


def test_a_single_document_outside_the_scope_is_refused(tmp_path, monkeypatch):
    http_store = store(tmp_path, monkeypatch)
    exchange = exchange_for(http_store, "GET", "/traces/globex:1")
    with pytest.raises(Denial) as denial:
        answer(http_store, exchange, {"_id": "globex:1", "tenant": "globex"})
    assert denial.value.status == 403 and "its tenant is not yours" in denial.value.reason


@pytest.mark.parametrize(
    ("body", "status", "content_type", "code"),
    [
        (b"<html></html>", 200, "text/html", "UnmaskableContent"),
        (b"{not json", 200, None, "UnmaskableContent"),
        (b"{}", 301, None, "GatewayFailure"),
    ],
)
def test_an_answer_that_cannot_be_masked_is_refused(
    tmp_path, monkeypatch, body, status, content_type, code
):
    http_store = store(tmp_path, monkeypatch)
    exchange = exchange_for(http_store, "GET", "/traces/acme:1")
    with pytest.raises(Denial) as denial:
        answer(http_store, exchange, body, status=status, content_type=content_type)
    assert denial.value.code == code


def test_a_store_error_keeps_only_short_text_under_its_error_keys(tmp_path, monkeypatch):
    http_store = store(tmp_path, monkeypatch)
    exchange = exchange_for(http_store, "GET", "/traces/acme:1")
    error = {"error": "not_found", "reason": "x" * 500, "doc": {"email": "a@b.co"}}
    result = answer(http_store, exchange, error, status=404)
    assert result.status == 404
    assert json.loads(result.body) == {"error": "not_found", "reason": "x" * 200}
    leaky = {"error": "bad_request", "reason": "no user dana.reyes@example.com"}
    served = json.loads(answer(http_store, exchange, leaky, status=400).body)
    assert served["error"] == "bad_request" and "dana.reyes@example.com" not in served["reason"]


def test_a_document_path_inside_another_document_is_masked_with_it(tmp_path, monkeypatch):
    def nested(data):
        route(data, 2)["documents"] = ["$", "$.messages[*]"]

    http_store = store(tmp_path, monkeypatch, nested)
    exchange = exchange_for(http_store, "GET", "/traces/acme:1")
    doc = {"_id": "acme:1", "tenant": "acme", "messages": [{"content": "mail a@b.co"}]}
    served = json.loads(answer(http_store, exchange, doc).body)
    assert served["messages"][0]["content"].startswith("mail [EMAIL:")
    assert exchange.report.documents == 1
