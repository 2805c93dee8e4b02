"""What the store says about the unmasked bytes never reaches the client (issue 14, classes 2
and 3): store headers pass an allow-list, ETags are the masked bytes', conditions are answered
by the gateway, redirects are refused, listings lose what names other keys or describes
unmasked objects, and one request has one meaning (no repeated parameters)."""

from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from tests.localhttp import LocalServer

EMAIL = "dana.reyes@acme.io"
TRACE = json.dumps({"trace_id": "t1", "messages": [{"role": "user", "content": f"mail {EMAIL}"}]})
LISTING = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    "<Name>traces</Name><Prefix>traces/</Prefix><Marker>traces/team-b/zz.json</Marker>"
    "<NextMarker>traces/team-b/secret-plans.json</NextMarker><MaxKeys>1000</MaxKeys>"
    "<IsTruncated>true</IsTruncated>"
    "<Contents><Key>traces/team-a/tr-a001.json</Key><LastModified>2026-11-20T09:14:03.000Z"
    "</LastModified><ETag>&quot;0123456789abcdef0123456789abcdef&quot;</ETag><Size>120</Size>"
    "<Owner><ID>abc</ID><DisplayName>dana.reyes</DisplayName></Owner>"
    "<StorageClass>STANDARD</StorageClass></Contents>"
    f"<Contents><Key>traces/team-a/exports/{EMAIL}.json</Key><Size>9</Size></Contents>"
    "<Contents><Key>traces/team-b/tr-b001.json</Key><Size>5</Size></Contents>"
    "</ListBucketResult>"
)
LEAKY_HEADERS = {
    "ETag": '"' + hashlib.md5(TRACE.encode()).hexdigest() + '"',
    "x-amz-content-sha256": hashlib.sha256(TRACE.encode()).hexdigest(),
    "Content-Disposition": f'attachment; filename="{EMAIL}.json"',
    "Set-Cookie": "session=store-session; Path=/",
    "x-amz-meta-owner": EMAIL,
    "x-amz-website-redirect-location": "https://evil.example/",
    "Last-Modified": "Fri, 20 Nov 2026 09:14:03 GMT",
}


class MisbehavingStore(LocalServer):
    """An S3-shaped server that says too much: hashes of its bytes, a person in a filename,
    cookies, redirects, listings that name another team's keys."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append({"path": self.path, "headers": dict(self.headers)})
                if "redirect" in self.path:
                    self.send_response(307)
                    self.send_header("Location", f"https://evil.example/{EMAIL}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                listing = "list-type" in self.path or self.path.rstrip("/").endswith("/traces")
                body = (LISTING if listing else TRACE).encode()
                self.send_response(200)
                self.send_header(
                    "Content-Type", "application/xml" if listing else "application/json"
                )
                for name, value in LEAKY_HEADERS.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(Handler)


@pytest.fixture(scope="module")
def leaky():
    store = MisbehavingStore()
    yield store
    store.stop()


@pytest.fixture
def gateway(make_gateway, leaky):
    return make_gateway(**{"upstream.endpoint": leaky.endpoint})


@pytest.fixture
def headers(issuer):
    return {"Authorization": f"Bearer {issuer.token('carol', ['support-engineers'])}"}


def test_store_headers_pass_an_allow_list_and_the_etag_is_the_masked_bytes(gateway, headers):
    response = httpx.get(gateway.url + "/traces/traces/team-a/tr-a001.json", headers=headers)
    assert response.status_code == 200
    assert EMAIL not in response.text
    for name in ("x-amz-content-sha256", "content-disposition", "set-cookie", "x-amz-meta-owner",
                 "x-amz-website-redirect-location"):  # fmt: skip
        assert name not in response.headers, name
    assert response.headers["etag"] == '"' + hashlib.md5(response.content).hexdigest() + '"'
    assert response.headers["last-modified"] == LEAKY_HEADERS["Last-Modified"]
    assert EMAIL not in str(response.headers)


def test_conditional_requests_are_answered_against_the_masked_bytes_never_forwarded(
    gateway, headers, leaky
):
    url = gateway.url + "/traces/traces/team-a/tr-a001.json"
    etag = httpx.get(url, headers=headers).headers["etag"]
    since = {**headers, "If-Modified-Since": "Sat, 21 Nov 2026 00:00:00 GMT"}
    not_modified = httpx.get(url, headers=since)
    assert not_modified.status_code == 304
    assert not_modified.headers["etag"] == etag != LEAKY_HEADERS["ETag"]
    modified = httpx.get(
        url, headers={**headers, "If-Modified-Since": "Thu, 01 Jan 2026 00:00:00 GMT"}
    )
    assert modified.status_code == 200
    unmodified = {**headers, "If-Unmodified-Since": "Thu, 01 Jan 2026 00:00:00 GMT"}
    assert httpx.get(url, headers=unmodified).status_code == 412
    forwarded = [r["headers"] for r in leaky.requests]
    assert not any(k.lower().startswith("if-") for h in forwarded for k in h)


def test_a_redirect_from_the_store_is_refused(gateway, headers):
    response = httpx.get(gateway.url + "/traces/traces/team-a/redirect.json", headers=headers)
    assert response.status_code == 502
    assert "redirect" in response.json()["error"]["reason"]
    assert "location" not in response.headers and "evil.example" not in response.text


def test_a_listing_loses_other_keys_markers_etags_and_owners(gateway, headers):
    response = httpx.get(gateway.url + "/traces?list-type=2&prefix=traces/team-a/", headers=headers)
    assert response.status_code == 200, response.text
    body = response.text
    assert "traces/team-a/tr-a001.json" in body
    for leaked in ("team-b", "0123456789abcdef", "dana.reyes", "<Owner>"):
        assert leaked not in body, leaked


@pytest.mark.parametrize(
    "query",
    [
        "list-type=2&prefix=traces/team-a/&prefix=traces/admin/",
        "list-type=2&prefix=traces/team-a/&max-keys=10&max-keys=100000",
        "list-type=2&prefix=traces/team-a/&PREFIX=traces/admin/",
    ],
    ids=["prefix", "max-keys", "case"],
)
def test_a_repeated_query_parameter_is_refused(gateway, headers, leaky, query):
    before = len(leaky.requests)
    response = httpx.get(gateway.url + "/traces?" + query, headers=headers)
    assert response.status_code == 400
    assert "is repeated" in response.json()["error"]["reason"]
    assert len(leaky.requests) == before  # nothing was forwarded


def test_key_names_in_a_listing_go_through_the_detectors(gateway, headers):
    response = httpx.get(gateway.url + "/traces?list-type=2&prefix=traces/team-a/", headers=headers)
    assert response.status_code == 200
    assert EMAIL not in response.text
    assert "traces/team-a/exports/[REDACTED:EMAIL]" in response.text  # redacted, never hashed


def test_a_scope_can_refuse_listings_whose_key_names_hold_personal_data(
    make_gateway, leaky, headers
):
    gateway = make_gateway(
        **{
            "upstream.endpoint": leaky.endpoint,
            "roles.support.scopes.debugging.listing_keys": "refuse",
        }
    )
    response = httpx.get(gateway.url + "/traces?list-type=2&prefix=traces/team-a/", headers=headers)
    assert response.status_code == 403
    assert "listing_keys: refuse" in response.json()["error"]["reason"]
    assert EMAIL not in response.text
