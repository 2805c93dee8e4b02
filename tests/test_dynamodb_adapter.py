"""DynamoDB requests and items, without a server: parsing, row scope, types, config errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tracegate.config import ConfigError, load_config
from tracegate.denial import Denial
from tracegate.stores import dynamodb

DYNAMODB_RULES = Path(__file__).resolve().parent.parent / "rules" / "dynamodb.yaml"
TARGET = dynamodb.TARGET_PREFIX


def test_only_reads_with_expressions_are_parsed():
    access = dynamodb.parse_request("POST", "/", TARGET + "Query", b'{"TableName": "t"}')
    assert access.operation == "Query" and access.resource == "dynamodb:table/t"
    batch = dynamodb.parse_request(
        "POST", "/", TARGET + "BatchGetItem", b'{"RequestItems": {"b": {}, "a": {}}}'
    )
    assert batch.tables == ("a", "b")
    for method, path, target, body, code in [
        ("POST", "/", TARGET + "DeleteItem", b"{}", "AccessDenied"),
        ("GET", "/", TARGET + "Query", b"{}", "AccessDenied"),
        ("POST", "/", None, b"{}", "InvalidRequest"),
        ("POST", "/", TARGET + "Query", b"not json", "InvalidRequest"),
        ("POST", "/", TARGET + "Query", b"[]", "InvalidRequest"),
        ("POST", "/", TARGET + "Query", b'{"TableName": "t", "ScanFilter": {}}', "InvalidRequest"),
        ("POST", "/", TARGET + "GetItem", b"{}", "InvalidRequest"),
    ]:
        with pytest.raises(Denial) as denial:
            dynamodb.parse_request(method, path, target, body)
        assert denial.value.code == code, (method, target, body)


@pytest.mark.parametrize(
    ("expression", "names", "pinned"),
    [
        ("tenant_id = :t", {}, {"S": "acme"}),
        ("#p = :t AND begins_with(trace_id, :x)", {"#p": "tenant_id"}, {"S": "acme"}),
        ("trace_id > :x AND (tenant_id = :t)", {}, {"S": "acme"}),
    ],
)
def test_the_partition_value_a_query_pins_is_read_from_its_expression(expression, names, pinned):
    request = {
        "KeyConditionExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": {":t": {"S": "acme"}, ":x": {"S": "tr-"}},
    }
    assert dynamodb.partition_value_of_query(request, "tenant_id") == pinned


def test_typed_values_round_trip_through_plain_json_keeping_their_types():
    item = {
        "s": {"S": "x"},
        "n": {"N": "12.50"},
        "b": {"B": "cmF3"},
        "t": {"BOOL": False},
        "z": {"NULL": True},
        "m": {"M": {"inner": {"L": [{"N": "1"}, {"S": "a"}, {"SS": ["p", "q"]}]}}},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5"]},
        "bs": {"BS": ["cmF3"]},
    }
    plain = dynamodb.item_to_plain(item)
    assert plain["n"] == Decimal("12.50") and plain["m"]["inner"][2] == ["p", "q"]
    assert dynamodb.item_to_typed(plain, item) == item


def test_masked_values_become_strings_and_equal_set_members_collapse():
    item = {"n": {"N": "4111"}, "ss": {"SS": ["a@x.io", "b@x.io"]}, "b": {"B": "cmF3"}}
    masked = {"n": "****4111", "ss": ["[REDACTED:EMAIL]", "[REDACTED:EMAIL]"], "b": "[X]"}
    assert dynamodb.item_to_typed(masked, item) == {
        "n": {"S": "****4111"},
        "ss": {"SS": ["[REDACTED:EMAIL]"]},
        "b": {"S": "[X]"},
    }


def test_error_bodies_have_dynamodbs_shape_and_a_crc32():
    body = dynamodb.error_body(Denial(403, "AccessDenied", "no"))
    assert b'"__type": "com.amazonaws.dynamodb.v20120810#AccessDeniedException"' in body
    import zlib

    assert dynamodb.crc32(body) == str(zlib.crc32(body))


def test_the_dynamodb_rules_file_loads():
    config = load_config(DYNAMODB_RULES)
    assert config.upstream.kind == "dynamodb"
    assert config.roles["support"].scopes["debugging"].partition.claim == "tenant"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: c["roles"]["support"]["scopes"]["debugging"].update(tables=[]),
            "roles.support.scopes.debugging.tables: list the tables",
        ),
        (
            lambda c: c["roles"]["support"]["scopes"]["debugging"].update(prefixes=["a/"]),
            "roles.support.scopes.debugging.prefixes: not a setting for a dynamodb store",
        ),
        (
            lambda c: c["roles"]["analyst"]["scopes"]["analytics"].update(operations=["GetObject"]),
            "bad.yaml: roles.analyst.scopes.analytics.operations: "
            "GetObject is not a read the dynamodb",
        ),
        (
            lambda c: c["roles"]["analyst"]["scopes"]["analytics"]["partition"].pop("claim"),
            "roles.analyst.scopes.analytics.partition.claim: Field required",
        ),
        (lambda c: c["upstream"].update(bucket="x"), "upstream.bucket: unknown key"),
    ],
)
def test_bad_dynamodb_config_is_one_line_naming_the_key(tmp_path, mutate, expected):
    config = yaml.safe_load(DYNAMODB_RULES.read_text())
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert expected in str(error.value) and "\n" not in str(error.value), str(error.value)
