from __future__ import annotations

import base64
import zlib
from types import SimpleNamespace

import pytest
from botocore.exceptions import FlexibleChecksumError
from botocore.httpchecksum import _handle_bytes_response

from tracegate.content import decode_body, document_kind
from tracegate.denial import Denial
from tracegate.resources import prefix_overlaps
from tracegate.stores import s3

BUCKET = "traces"


def parse(method="GET", path="/traces/t/a.json", query=()):
    return s3.parse_request(method, path, list(query), BUCKET)


@pytest.mark.parametrize(
    ("method", "path", "query", "operation"),
    [
        ("GET", "/traces/t/a.json", [], "GetObject"),
        ("GET", "/traces/t/a.json", [("x-id", "GetObject")], "GetObject"),
        ("HEAD", "/traces/t/a.json", [], "HeadObject"),
        ("GET", "/traces", [("list-type", "2"), ("prefix", "t/")], "ListObjectsV2"),
        ("GET", "/traces/", [("prefix", "t/"), ("marker", "x")], "ListObjects"),
        ("HEAD", "/traces", [], "HeadBucket"),
    ],
)
def test_reads_are_classified(method, path, query, operation):
    assert parse(method, path, query).operation == operation


def test_keys_are_decoded_once_and_resources_named():
    access = parse(path="/traces/t/with%20space.json")
    assert access.key == "t/with space.json"
    assert access.resource == "s3://traces/t/with space.json"
    assert access.upstream_path() == "/traces/t/with%20space.json"


@pytest.mark.parametrize(
    ("method", "path", "query", "reason"),
    [
        ("PUT", "/traces/t/a.json", [], "PUT is not a read"),
        ("DELETE", "/traces/t/a.json", [], "DELETE is not a read"),
        ("POST", "/traces/t/a.json", [("select", ""), ("select-type", "2")], "POST is not a read"),
        ("GET", "/traces/t/a.json", [("acl", "")], "'acl' is not allowed"),
        ("GET", "/traces/t/a.json", [("tagging", "")], "'tagging' is not allowed"),
        ("GET", "/traces/t/a.json", [("X-Amz-Signature", "abc")], "presigned"),
        ("GET", "/traces/t/a.json", [("AWSAccessKeyId", "abc")], "presigned"),
        ("GET", "/traces/t/a.json", [("response-content-type", "text/html")], "not allowed"),
        ("GET", "/traces", [("location", "")], "'location' is not allowed"),
        ("GET", "/other/t/a.json", [], "bucket 'other' is not served"),
        ("GET", "/", [], "listing buckets is not allowed"),
    ],
)
def test_everything_but_plain_reads_is_refused(method, path, query, reason):
    with pytest.raises(Denial) as caught:
        parse(method, path, query)
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "path",
    [
        "/traces/t/../u/a.json",
        "/traces/t/%2E%2E/u/a.json",
        "/traces/t/./a.json",
        "/traces/t//a.json",
        "/traces/t/%252e%252e/a.json",
        "/traces/t/a%00.json",
        "/traces/t\\..\\u/a.json",
        "traces/t/a.json",
    ],
)
def test_ambiguous_paths_are_refused(path):
    with pytest.raises(Denial) as caught:
        parse(path=path)
    assert caught.value.status == 400


LISTING = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>traces</Name><Prefix></Prefix><KeyCount>4</KeyCount><EncodingType>url</EncodingType>
<Contents><Key>a/1.json</Key></Contents>
<Contents><Key>a/with%20space.json</Key></Contents>
<Contents><Key>b/1.json</Key></Contents>
<CommonPrefixes><Prefix>b/</Prefix></CommonPrefixes>
<CommonPrefixes><Prefix>a/sub/</Prefix></CommonPrefixes>
</ListBucketResult>"""


def test_listing_keeps_only_keys_and_prefixes_in_scope():
    result = s3.filter_listing(LISTING, ["a/"])
    text = result.body.decode()
    assert "b/1.json" not in text and "<Prefix>b/</Prefix>" not in text
    assert "a/with%20space.json" in text and "a/sub/" in text
    assert "<KeyCount>3</KeyCount>" in text
    assert (result.kept, result.removed) == (3, 2)


@pytest.mark.parametrize(
    ("prefix", "overlaps"),
    [("a/", True), ("a/deeper/", True), ("", True), ("b/", False), ("ab", False)],
)
def test_listing_prefix_scope(prefix, overlaps):
    assert prefix_overlaps(prefix, ["a/"]) is overlaps


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=10-", (10, 99)),
        ("bytes=-5", (95, 99)),
        ("bytes=90-200", (90, 99)),
    ],
)
def test_ranges_are_resolved_against_the_masked_size(header, expected):
    byte_range = s3.parse_range(header, 100)
    assert (byte_range.start, byte_range.end) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=5-2", "bytes=0-1,4-5", "items=0-1"])
def test_unsatisfiable_ranges_are_416(header):
    with pytest.raises(Denial) as caught:
        s3.parse_range(header, 100)
    assert caught.value.status == 416


@pytest.mark.parametrize("algorithm", ["crc32", "sha1", "sha256"])
def test_recomputed_checksums_pass_botocores_own_validation(algorithm):
    body = b'{"masked": true}'
    header = f"x-amz-checksum-{algorithm}"
    changes = s3.rewritten_object_headers([header], body, partial=False)
    response = {"headers": {header: changes[header]}}
    assert _handle_bytes_response(SimpleNamespace(content=body), response, algorithm) == body
    with pytest.raises(FlexibleChecksumError):  # the check is real: other bytes fail it
        _handle_bytes_response(SimpleNamespace(content=body + b" "), response, algorithm)


def test_checksums_we_cannot_compute_are_removed_and_ranges_carry_none():
    changes = s3.rewritten_object_headers(
        ["x-amz-checksum-crc32c", "x-amz-checksum-crc32", "x-amz-checksum-type"], b"x", True
    )
    assert changes["x-amz-checksum-crc32c"] is None
    assert changes["x-amz-checksum-crc32"] is None
    assert changes["x-amz-checksum-type"] is None
    assert changes["etag"] == s3.etag_for(b"x")


def test_crc32_matches_the_reference_encoding():
    value = s3.checksum_for("x-amz-checksum-crc32", b"hello")
    assert base64.b64decode(value) == zlib.crc32(b"hello").to_bytes(4, "big")


@pytest.mark.parametrize(
    ("content_type", "key", "kind"),
    [
        ("application/json", "t/a.bin", "json"),
        ("application/json; charset=utf-8", None, "json"),
        ("application/vnd.trace+json", None, "json"),
        ("application/x-ndjson", "t/a.json", "jsonl"),
        ("binary/octet-stream", "t/a.jsonl", "jsonl"),
        ("binary/octet-stream", "t/a.json", "json"),
    ],
)
def test_document_kind_from_type_then_suffix(content_type, key, kind):
    assert document_kind(content_type, key) == kind


def test_unknown_document_kind_is_refused():
    with pytest.raises(Denial, match="cannot mask content type"):
        document_kind("image/png", "t/a.png")


def test_decoding_caps_output_size():
    bomb = zlib.compress(b"0" * 1_000_000)
    with pytest.raises(Denial) as caught:
        decode_body(bomb, "deflate", 1000)
    assert caught.value.code == "BodyTooLarge"
    assert decode_body(zlib.compress(b"ok"), "deflate", 1000) == b"ok"


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, gzip", "compress"])
def test_unknown_or_stacked_encodings_are_refused(encoding):
    with pytest.raises(Denial, match="unsupported Content-Encoding"):
        decode_body(b"x", encoding, 1000)
