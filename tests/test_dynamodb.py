"""tracegate in front of DynamoDB: a real mitmdump, moto's DynamoDB (signatures on), boto3."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import aws_client
from tests.harness import GatewayProcess, audit_rows, store_gateway
from tracegate.demo.setup import DYNAMODB_EXAMPLE
from tracegate.demo.store import LocalDynamo
from tracegate.demo.traces import DYNAMO_SECRET, dynamodb_items

TABLE = "traces"


@pytest.fixture(scope="module")
def dynamo(tmp_path_factory) -> Iterator[LocalDynamo]:
    store = LocalDynamo()
    store.start(log=tmp_path_factory.mktemp("moto-dynamodb") / "moto.log")
    try:
        store.seed(dynamodb_items())
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, dynamo, issuer) -> Iterator[GatewayProcess]:
    workdir = tmp_path_factory.mktemp("dynamodb-gateway")
    process = store_gateway(
        workdir,
        dynamo,
        issuer,
        DYNAMODB_EXAMPLE,
        **{"roles.support.scopes.debugging.approvals.0.wait_seconds": 1},
    ).start()
    try:
        yield process
    finally:
        process.stop()


def client(gateway: GatewayProcess, token: str | None, **headers: str):
    """boto3's DynamoDB client at the gateway; the token rides in X-Tracegate-Token."""
    return aws_client("dynamodb", gateway.url, token, **headers)


@pytest.fixture(scope="module")
def tokens(issuer) -> dict[str, str]:
    return {
        "acme_support": issuer.token("alice@acme", ["support-engineers"], tenant="acme"),
        "globex_support": issuer.token("gus@globex", ["support-engineers"], tenant="globex"),
        "acme_analyst": issuer.token("bob@acme", ["data-analysts"], tenant="acme"),
        "no_tenant": issuer.token("nora@acme", ["support-engineers"]),
    }


def acme_query(**extra: Any) -> dict[str, Any]:
    return {
        "TableName": TABLE,
        "KeyConditionExpression": "#t = :t",
        "ExpressionAttributeNames": {"#t": "tenant_id"},
        "ExpressionAttributeValues": {":t": {"S": "acme"}},
        **extra,
    }


def denied(excinfo) -> tuple[str, str]:
    error = excinfo.value.response["Error"]
    return error["Code"], error["Message"]


def test_two_roles_see_different_fields_of_the_same_items(gateway, tokens):
    support = client(gateway, tokens["acme_support"]).query(**acme_query())
    analyst = client(gateway, tokens["acme_analyst"]).query(**acme_query())
    item = support["Items"][0]
    assert item["tenant_id"] == {"S": "acme"}
    assert item["user"]["M"]["email"]["S"].startswith("hmac:")
    assert item["messages"]["L"][1]["M"]["content"]["S"] == (
        "found key [REDACTED:AWS_ACCESS_KEY_ID] in config"
    )
    assert item["messages"]["L"][0]["M"]["content"]["S"].startswith("Mail me at [EMAIL:")
    assert set(analyst["Items"][0]) == {
        "tenant_id",
        "trace_id",
        "created_at",
        "model",
        "latency_ms",
        "cost_usd",
    }
    assert DYNAMO_SECRET not in str(support) and "@acme.example.org" not in str(support)


def test_types_survive_the_round_trip_through_plain_json(gateway, tokens):
    item = client(gateway, tokens["acme_support"]).get_item(
        TableName=TABLE, Key={"tenant_id": {"S": "acme"}, "trace_id": {"S": "tr-0002"}}
    )["Item"]
    assert item["latency_ms"] == {"N": "802"} and item["cost_usd"] == {"N": "0.0125"}
    assert item["flagged"] == {"BOOL": True} and item["note"] == {"NULL": True}
    assert sorted(item["tags"]["SS"]) == ["acme", "support"]
    assert sorted(item["scores"]["NS"], key=Decimal) == ["0.5", "1"]
    assert item["blob"] == {"B": b"raw bytes"}  # boto3 decodes B to bytes
    assert item["user"]["M"]["id"] == {"S": "u-2"}


def test_a_query_for_another_tenant_is_refused(gateway, tokens):
    db = client(gateway, tokens["acme_support"])
    with pytest.raises(ClientError) as excinfo:
        db.query(**{**acme_query(), "ExpressionAttributeValues": {":t": {"S": "globex"}}})
    code, message = denied(excinfo)
    assert code == "AccessDeniedException" and "another tenant_id" in message


@pytest.mark.parametrize(
    "query",
    [
        {
            "KeyConditionExpression": "trace_id = :t",
            "ExpressionAttributeValues": {":t": {"S": "x"}},
        },
        {
            "KeyConditionExpression": "tenant_id = :a OR tenant_id = :b",
            "ExpressionAttributeValues": {":a": {"S": "acme"}, ":b": {"S": "globex"}},
        },
        {
            "KeyConditionExpression": "tenant_id = :a AND tenant_id = :b",
            "ExpressionAttributeValues": {":a": {"S": "acme"}, ":b": {"S": "globex"}},
        },
        {
            "KeyConditionExpression": "#t = :a AND #u = :b",
            "ExpressionAttributeNames": {"#t": "tenant_id", "#u": "tenant_id"},
            "ExpressionAttributeValues": {":a": {"S": "acme"}, ":b": {"S": "globex"}},
        },
        {
            "KeyConditionExpression": "tenant_id = :a AND begins_with(tenant_id, :b)",
            "ExpressionAttributeValues": {":a": {"S": "acme"}, ":b": {"S": "g"}},
        },
    ],
    ids=["no-partition", "or", "named-twice", "two-aliases", "equality-and-range"],
)
def test_a_query_that_does_not_pin_the_partition_is_refused(gateway, tokens, query):
    with pytest.raises(ClientError) as excinfo:
        client(gateway, tokens["acme_support"]).query(TableName=TABLE, **query)
    assert denied(excinfo)[0] == "AccessDeniedException"


@pytest.mark.parametrize("limit", [-1, 0])
def test_a_limit_below_one_is_refused_not_passed_past_max_limit(gateway, tokens, limit):
    with pytest.raises(ClientError) as excinfo:
        # What a client that skips boto3's own checks (or any HTTP client) can send.
        raw = aws_client("dynamodb", gateway.url, tokens["acme_support"], validate=False)
        raw.query(**acme_query(), Limit=limit)
    assert "Limit must be a whole number" in denied(excinfo)[1]


def test_get_and_batch_get_keys_must_be_in_the_tenant(gateway, tokens):
    db = client(gateway, tokens["acme_support"])
    with pytest.raises(ClientError) as excinfo:
        db.get_item(
            TableName=TABLE, Key={"tenant_id": {"S": "globex"}, "trace_id": {"S": "tr-0001"}}
        )
    assert "outside your tenant_id" in denied(excinfo)[1]
    keys = [{"tenant_id": {"S": "acme"}, "trace_id": {"S": f"tr-{n:04d}"}} for n in range(3)]
    batch = db.batch_get_item(RequestItems={TABLE: {"Keys": keys}})
    assert len(batch["Responses"][TABLE]) == 3
    with pytest.raises(ClientError):
        db.batch_get_item(
            RequestItems={
                TABLE: {
                    "Keys": [*keys, {"tenant_id": {"S": "globex"}, "trace_id": {"S": "tr-0001"}}]
                }
            }
        )


def test_a_token_without_the_tenant_claim_is_refused(gateway, tokens):
    with pytest.raises(ClientError) as excinfo:
        client(gateway, tokens["no_tenant"]).query(**acme_query())
    assert "'tenant' claim" in denied(excinfo)[1]


def test_writes_other_tables_and_legacy_parameters_are_refused(gateway, tokens):
    db = client(gateway, tokens["acme_support"])
    with pytest.raises(ClientError) as put:
        db.put_item(TableName=TABLE, Item={"tenant_id": {"S": "acme"}, "trace_id": {"S": "x"}})
    assert "PutItem is not a read" in denied(put)[1]
    with pytest.raises(ClientError) as other:
        db.query(**{**acme_query(), "TableName": "billing"})
    assert "outside the scope" in denied(other)[1]
    with pytest.raises(ClientError) as legacy:
        db.query(
            TableName=TABLE,
            KeyConditions={
                "tenant_id": {"AttributeValueList": [{"S": "acme"}], "ComparisonOperator": "EQ"}
            },
        )
    assert "legacy parameter" in denied(legacy)[1]


def test_limit_is_capped_and_pagination_stays_in_scope_and_masked(gateway, tokens):
    db = client(gateway, tokens["acme_support"])
    pages, seen, start = 0, [], None
    while pages < 10:
        extra = {"ExclusiveStartKey": start} if start else {}
        page = db.query(**acme_query(Limit=100, **extra))
        assert page["Count"] <= 10  # the role's max_limit
        seen += page["Items"]
        pages += 1
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert pages == 3 and len(seen) == 25
    assert all(i["tenant_id"] == {"S": "acme"} for i in seen)
    assert DYNAMO_SECRET not in str(seen)


def test_projection_outside_the_allow_list_is_narrowed_and_said(gateway, tokens):
    db = client(gateway, tokens["acme_analyst"])
    result = db.query(
        **acme_query(
            ProjectionExpression="trace_id, #t, messages, #u",
            ExpressionAttributeNames={"#t": "tenant_id", "#u": "user"},
        )
    )
    assert set(result["Items"][0]) == {"trace_id", "tenant_id"}
    rows = audit_rows(gateway.workdir / "audit.sqlite3", subject="bob@acme")
    assert "projection narrowed: messages, user not allowed" in rows[-1]["reason"]
    # Only hidden fields asked for: the partition attribute (kept for the row check) remains.
    only_hidden = db.query(**acme_query(ProjectionExpression="messages"))
    assert all(set(i) == {"tenant_id"} for i in only_hidden["Items"])


def test_a_scan_is_held_for_approval_and_returns_only_the_tenants_rows_once_approved(
    gateway, tokens, issuer
):
    db = client(gateway, tokens["acme_support"], **{"X-Tracegate-Reason": "INC-9 audit"})
    with pytest.raises(ClientError) as pending:
        db.scan(TableName=TABLE)
    code, message = denied(pending)
    assert code == "ApprovalPending" and "still pending" in message
    approval_id = message.split("approval ")[1].split()[0]
    approver = issuer.token("sec@acme", ["security-leads"], tenant="acme")
    decided = httpx.post(
        f"{gateway.admin_url}/approvals/{approval_id}/approve",
        headers={"Authorization": f"Bearer {approver}"},
        timeout=10,
    )
    assert decided.status_code == 200, decided.text
    result = db.scan(TableName=TABLE)  # the same request again: served through the grant
    assert result["Items"] and all(i["tenant_id"] == {"S": "acme"} for i in result["Items"])
    assert result["Count"] == len(result["Items"]) <= 10
    # A different scan (another Limit) is a different request: not covered by the grant.
    with pytest.raises(ClientError):
        db.scan(TableName=TABLE, Limit=3)


def test_rewritten_bodies_carry_a_correct_crc32(gateway, tokens):
    import zlib

    body = {
        "TableName": TABLE,
        "Key": {"tenant_id": {"S": "acme"}, "trace_id": {"S": "tr-0001"}},
    }
    import json

    response = httpx.post(
        gateway.url + "/",
        content=json.dumps(body),
        headers={
            "X-Amz-Target": "DynamoDB_20120810.GetItem",
            "Content-Type": "application/x-amz-json-1.0",
            "X-Tracegate-Token": tokens["acme_support"],
        },
        timeout=10,
    )
    assert response.status_code == 200
    assert int(response.headers["x-amz-crc32"]) == zlib.crc32(response.content)
    assert base64.b64decode(response.json()["Item"]["blob"]["B"]) == b"raw bytes"


def test_no_token_is_a_dynamodb_shaped_401(gateway):
    with pytest.raises(ClientError) as excinfo:
        client(gateway, None).query(**acme_query())
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert "identity token" in denied(excinfo)[1]


def test_readiness_probes_the_tables_with_the_gateways_credentials(gateway):
    ready = httpx.get(gateway.admin_url + "/readyz", timeout=10).json()
    assert ready["checks"]["store"] == {"ok": True, "detail": "table(s) traces reachable"}


@pytest.fixture(scope="module")
def scan_gateway(tmp_path_factory, dynamo, issuer) -> Iterator[GatewayProcess]:
    """The example without the Scan approval, so pages can be walked."""
    workdir = tmp_path_factory.mktemp("dynamodb-scan-gateway")
    process = store_gateway(
        workdir, dynamo, issuer, DYNAMODB_EXAMPLE,
        **{"roles.support.scopes.debugging.approvals": []},
    ).start()  # fmt: skip
    try:
        yield process
    finally:
        process.stop()


def test_scan_pages_never_carry_another_tenants_key_or_counts(scan_gateway, tokens):
    db = client(scan_gateway, tokens["acme_support"])
    seen, pages, start = [], 0, None
    while pages < 40:
        extra = {"ExclusiveStartKey": start} if start else {}
        page = db.scan(TableName=TABLE, Limit=4, **extra)
        pages += 1
        assert "globex" not in json.dumps(page, default=str)
        assert page["ScannedCount"] == page["Count"] == len(page["Items"])
        seen.extend(item["trace_id"]["S"] for item in page["Items"])
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    assert pages > 1 and len(seen) == len(set(seen)) == 25  # every acme row, once


def test_a_forged_or_stale_cursor_is_refused(scan_gateway, tokens):
    db = client(scan_gateway, tokens["acme_support"])
    with pytest.raises(ClientError) as excinfo:
        db.scan(TableName=TABLE, ExclusiveStartKey={"tracegate_cursor": {"S": "AAAA"}})
    assert "not a cursor this gateway issued" in denied(excinfo)[1]


def test_count_scans_are_refused_under_a_row_scope(scan_gateway, tokens):
    with pytest.raises(ClientError) as excinfo:
        client(scan_gateway, tokens["acme_support"]).scan(TableName=TABLE, Select="COUNT")
    assert "would count other tenants' rows" in denied(excinfo)[1]


@pytest.mark.parametrize(
    "extra",
    [
        {
            "FilterExpression": "#u.email = :e",
            "ExpressionAttributeNames": {"#t": "tenant_id", "#u": "user"},
        },
        {"FilterExpression": "contains(messages, :e)"},
        {"FilterExpression": "attribute_exists(user.email) AND model = :e"},
    ],
    ids=["alias-path", "function", "bare-path"],
)
def test_a_filter_on_a_field_the_role_may_not_read_is_refused(gateway, tokens, extra):
    query = acme_query(**extra)
    query["ExpressionAttributeValues"] = {**query["ExpressionAttributeValues"], ":e": {"S": "x"}}
    with pytest.raises(ClientError) as excinfo:
        client(gateway, tokens["acme_analyst"]).query(**query)
    code, message = denied(excinfo)
    assert code == "AccessDeniedException" and "a field your role may not read" in message


def test_a_filter_on_a_readable_field_is_served(gateway, tokens):
    query = acme_query(FilterExpression="model = :m")
    query["ExpressionAttributeValues"] = {**query["ExpressionAttributeValues"], ":m": {"S": "x"}}
    assert client(gateway, tokens["acme_analyst"]).query(**query)["Items"] == []


def test_typed_values_that_hide_data_are_masked(gateway, tokens, dynamo):
    """A card number as N and in an NS, a key inside a binary set, an email as a map key."""
    card = "4111111111111111"
    dynamo.client().put_item(
        TableName=TABLE,
        Item={
            "tenant_id": {"S": "acme"},
            "trace_id": {"S": "tr-typed"},
            "pan": {"N": card},
            "pans": {"NS": [card, "5555555555554444"]},
            "blobs": {"BS": [b"aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE1"]},
            "by_user": {"M": {"dana.reyes@acme-mail.io": {"N": "3"}}},
        },
    )
    item = client(gateway, tokens["acme_support"]).get_item(
        TableName=TABLE, Key={"tenant_id": {"S": "acme"}, "trace_id": {"S": "tr-typed"}}
    )["Item"]
    served = json.dumps(item, default=str)
    for value in (card, "5555555555554444", "wJalrXUtnFEMI", "dana.reyes@acme-mail.io"):
        assert value not in served, value
    assert "S" in item["pan"]  # a masked number is served as a string
