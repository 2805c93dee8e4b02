"""A real mitmdump with the gateway script, a real moto S3 (signatures on), boto3 and httpx."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from tests.conftest import s3_client
from tests.harness import ANALYST_FIELDS, audit_rows
from tracegate.demo.traces import PLANTED_API_KEY, PLANTED_EMAIL

A_TRACE = "traces/team-a/tr-a001.json"
B_TRACE = "traces/team-b/tr-b001.json"


@pytest.fixture(scope="module")
def support_token(issuer):
    return issuer.token("alice@example.com", ["support-engineers"])


@pytest.fixture(scope="module")
def analyst_token(issuer):
    return issuer.token("bob@example.com", ["data-analysts"], alg="ES256")


def get(gateway, path, token=None, **headers):
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.get(gateway.url + path, headers=headers, timeout=20)


def test_two_roles_see_different_fields_of_the_same_trace(
    shared_gateway, support_token, analyst_token
):
    support = get(shared_gateway, f"/traces/{A_TRACE}", support_token)
    analyst = get(shared_gateway, f"/traces/{A_TRACE}", analyst_token)
    assert support.status_code == 200 and analyst.status_code == 200
    seen_by_support, seen_by_analyst = support.json(), analyst.json()

    assert seen_by_support["messages"][3]["name"] == "lookup_invoices"
    assert seen_by_support["user"]["email"].startswith("hmac:")
    assert seen_by_support["user"]["name"] == "[REDACTED:user-name]"
    assert seen_by_support["metadata"]["api_key"] == "[REDACTED:api-key]"
    assert PLANTED_API_KEY not in support.text

    assert set(seen_by_analyst) == ANALYST_FIELDS
    assert set(seen_by_analyst["user"]) == {"id"}
    assert seen_by_analyst["user"]["id"].startswith("hmac:")
    assert PLANTED_EMAIL not in analyst.text and "messages" not in analyst.text


def test_hash_masks_give_stable_pseudonyms_across_requests(shared_gateway, support_token):
    first = get(shared_gateway, f"/traces/{A_TRACE}", support_token).json()
    second = get(shared_gateway, "/traces/traces/team-a/tr-a002.json", support_token).json()
    assert first["user"]["email"] == second["user"]["email"]  # same person, same token


def test_key_outside_the_roles_prefixes_is_refused_with_the_reason(shared_gateway, support_token):
    response = get(shared_gateway, f"/traces/{B_TRACE}", support_token)
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "AccessDenied"
    assert "outside the scope of role 'support'" in error["reason"]
    assert "traces/team-a/" in error["reason"]


def test_boto3_sees_s3_error_shape_with_the_reason(shared_gateway, support_token):
    client = s3_client(shared_gateway.url, support_token)
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket="traces", Key=B_TRACE)
    error = caught.value.response["Error"]
    assert error["Code"] == "AccessDenied"
    assert "outside the scope of role 'support'" in error["Message"]


def test_listing_outside_scope_is_refused_and_inside_is_filtered(shared_gateway, support_token):
    client = s3_client(shared_gateway.url, support_token)
    with pytest.raises(ClientError) as caught:
        client.list_objects_v2(Bucket="traces", Prefix="traces/team-b/")
    assert (
        "prefix 'traces/team-b/' is outside the scope" in caught.value.response["Error"]["Message"]
    )

    listed = client.list_objects_v2(Bucket="traces", Prefix="traces/")
    keys = [o["Key"] for o in listed["Contents"]]
    assert keys and all(k.startswith("traces/team-a/") for k in keys)
    assert listed["KeyCount"] == len(keys)
    paged = client.get_paginator("list_objects_v2").paginate(
        Bucket="traces", Prefix="traces/", PaginationConfig={"PageSize": 2}
    )
    assert sorted(o["Key"] for page in paged for o in page.get("Contents", [])) == sorted(keys)


def test_listing_with_delimiter_hides_other_teams_common_prefixes(shared_gateway, support_token):
    client = s3_client(shared_gateway.url, support_token)
    listed = client.list_objects_v2(Bucket="traces", Prefix="traces/", Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["traces/team-a/"]


def test_boto3_get_object_of_a_masked_trace_passes_checksum_validation(
    shared_gateway, support_token
):
    client = s3_client(shared_gateway.url, support_token)
    result = client.get_object(Bucket="traces", Key=A_TRACE, ChecksumMode="ENABLED")
    body = result["Body"].read()
    document = json.loads(body)
    assert document["metadata"]["api_key"] == "[REDACTED:api-key]"
    assert result["ContentLength"] == len(body)
    head = client.head_object(Bucket="traces", Key=A_TRACE)
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == result["ETag"]


def test_boto3_download_file_with_ranged_gets_reassembles_the_masked_object(
    shared_gateway, support_token, tmp_path
):
    client = s3_client(shared_gateway.url, support_token)
    whole = client.get_object(Bucket="traces", Key=A_TRACE)["Body"].read()
    target = tmp_path / "trace.json"
    tiny_parts = TransferConfig(multipart_threshold=256, multipart_chunksize=256, max_concurrency=2)
    client.download_file("traces", A_TRACE, str(target), Config=tiny_parts)
    assert target.read_bytes() == whole
    ranged = client.get_object(Bucket="traces", Key=A_TRACE, Range="bytes=10-19")
    assert ranged["Body"].read() == whole[10:20]
    assert ranged["ContentRange"] == f"bytes 10-19/{len(whole)}"


def test_jsonl_traces_are_masked_line_by_line(shared_gateway, support_token):
    response = get(shared_gateway, "/traces/traces/team-a/chats/2026-11-20.jsonl", support_token)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) == 3
    assert all(line["user"]["email"].startswith("hmac:") for line in lines)


def test_otlp_attributes_are_masked_by_key(shared_gateway, support_token):
    response = get(shared_gateway, "/traces/traces/team-a/otel/span-0001.json", support_token)
    span = response.json()["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    attributes = {a["key"]: a["value"] for a in span["attributes"]}
    assert attributes["user.email"]["stringValue"] == "****@example.com"
    assert attributes["gen_ai.request.model"]["stringValue"] == "example-model-large"


def test_a_non_json_object_is_refused_not_passed_through(shared_gateway, support_token):
    response = get(shared_gateway, "/traces/traces/team-a/raw/screenshot.png", support_token)
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "UnsupportedContent"
    assert b"PNG" not in response.content


def test_a_missing_key_returns_the_stores_not_found(shared_gateway, support_token):
    client = s3_client(shared_gateway.url, support_token)
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket="traces", Key="traces/team-a/nope.json")
    assert caught.value.response["Error"]["Code"] == "NoSuchKey"


@pytest.mark.parametrize(
    ("purpose", "status", "reason"),
    [
        ("analytics", 403, "purpose 'analytics' is not allowed for role 'support'"),
        ("debugging", 200, None),
    ],
)
def test_purpose_header_must_be_one_the_role_allows(
    shared_gateway, support_token, purpose, status, reason
):
    response = get(
        shared_gateway, f"/traces/{A_TRACE}", support_token, **{"X-Tracegate-Purpose": purpose}
    )
    assert response.status_code == status
    if reason:
        assert reason in response.json()["error"]["reason"]


def test_writes_deletes_and_presigned_urls_are_refused(shared_gateway, support_token):
    client = s3_client(shared_gateway.url, support_token)
    with pytest.raises(ClientError) as put:
        client.put_object(Bucket="traces", Key="traces/team-a/new.json", Body=b"{}")
    assert "PUT is not a read" in put.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as delete:
        client.delete_object(Bucket="traces", Key=A_TRACE)
    assert delete.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as acl:
        client.get_object_acl(Bucket="traces", Key=A_TRACE)
    assert "'acl' is not allowed" in acl.value.response["Error"]["Message"]
    presigned = client.generate_presigned_url("get_object", {"Bucket": "traces", "Key": A_TRACE})
    response = httpx.get(presigned, headers={"Authorization": f"Bearer {support_token}"})
    assert response.status_code == 403
    assert "presigned" in response.json()["error"]["reason"]


def test_every_request_gets_an_audit_row_without_tokens(shared_gateway, support_token):
    allowed = get(shared_gateway, f"/traces/{A_TRACE}", support_token)
    denied = get(shared_gateway, f"/traces/{B_TRACE}", support_token)
    anonymous = get(shared_gateway, f"/traces/{A_TRACE}")
    audit = shared_gateway.config.parent / "audit.sqlite3"
    flows = {}
    for response in (allowed, denied, anonymous):
        flow_id = response.headers["x-tracegate-flow"]
        deadline = time.monotonic() + 5
        while not (rows := audit_rows(audit, flow_id=flow_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(rows) == 1
        flows[flow_id] = rows[0]
    row = flows[allowed.headers["x-tracegate-flow"]]
    assert row["decision"] == "allow" and row["status"] == 200
    assert row["subject"] == "alice@example.com" and row["role"] == "support"
    assert row["purpose"] == "debugging" and row["operation"] == "GetObject"
    assert row["resource"] == f"s3://traces/{A_TRACE}"
    assert json.loads(row["masks"])["rules"]["api-key"]["count"] == 1
    assert row["upstream_sha256"] != row["returned_sha256"]
    assert row["bytes_returned"] == len(allowed.content)
    denied_row = flows[denied.headers["x-tracegate-flow"]]
    assert denied_row["decision"] == "deny" and denied_row["status"] == 403
    assert "outside the scope" in denied_row["reason"]
    assert flows[anonymous.headers["x-tracegate-flow"]]["status"] == 401
    dump = "\n".join(str(r) for r in flows.values())
    assert support_token not in dump and support_token.split(".")[2] not in dump
    assert PLANTED_API_KEY not in dump and PLANTED_EMAIL not in dump


def test_free_text_secrets_and_personal_data_are_masked_in_flight(shared_gateway, support_token):
    response = get(shared_gateway, f"/traces/{A_TRACE}", support_token)
    user_message = response.json()["messages"][1]["content"]
    # The card and email sit inside prose; the support scope shows cards partially and
    # pseudonymises emails (see rules/example.yaml).
    assert "4111111111111111" not in response.text and "****1111" in user_message
    assert PLANTED_EMAIL not in response.text and "[EMAIL:" in user_message
    audit = shared_gateway.config.parent / "audit.sqlite3"
    flow_id = response.headers["x-tracegate-flow"]
    deadline = time.monotonic() + 5
    while not (rows := audit_rows(audit, flow_id=flow_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    rules = json.loads(rows[0]["masks"])["rules"]
    assert rules["detect.card"] == {
        "action": "partial",
        "count": 1,
        "paths": ["$.messages[1].content"],
    }
    assert rules["detect.email"]["action"] == "hash"
    assert PLANTED_EMAIL not in rows[0]["masks"]


def test_json_encoded_tool_results_stay_valid_json_after_masking(shared_gateway, support_token):
    response = get(shared_gateway, f"/traces/{A_TRACE}", support_token)
    tool_result = response.json()["messages"][3]["content"]
    assert json.loads(tool_result) == [{"invoice": "INV-20931", "amount": 49.0}]


def test_masking_is_warmed_up_and_start_up_objects_frozen_before_the_first_flow(shared_gateway):
    """The first flow must not wait for the name dictionaries to load, and the cyclic GC
    must not walk what start-up built at every full collection."""
    shared_gateway.wait_for_log("masking warmed up")
    line = next(x for x in shared_gateway.log().splitlines() if "masking warmed up" in x)
    frozen = int(line.split("warmed up; ")[1].split()[0])
    assert frozen > 100_000  # modules, detector dictionaries, compiled rules
