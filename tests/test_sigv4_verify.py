"""The SigV4 verifier (identity/sigv4.py) on AWS's published examples and botocore's own
signatures, including the keys where canonicalisation usually goes wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tracegate.identity import sigv4

# The example credentials and date of AWS's "Signature Version 4 examples" for S3.
AKID, SECRET = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
STAMP = "20130524T000000Z"
HOST = "examplebucket.s3.amazonaws.com"


def values_of(headers: dict[str, str]):
    lower = {k.lower(): v for k, v in headers.items()}
    return lambda name: [lower[name]] if name in lower else []


def check(method, raw_path, raw_query, headers, secret=SECRET):
    query = sigv4.split_query(raw_query)
    lower = {k.lower(): v for k, v in headers.items()}
    signed = sigv4.parse(lower, query)
    sigv4.verify(method, raw_path, query, values_of(headers), signed, secret)
    return signed


def aws_header(signed_headers: str, signature: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={AKID}/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )


def test_awss_get_object_example_verifies():
    headers = {
        "host": HOST,
        "range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY,
        "x-amz-date": STAMP,
        "authorization": aws_header(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    }
    check("GET", "/test.txt", "", headers)


def test_awss_list_objects_example_verifies():
    headers = {
        "host": HOST,
        "x-amz-content-sha256": EMPTY,
        "x-amz-date": STAMP,
        "authorization": aws_header(
            "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    }
    check("GET", "/", "max-keys=2&prefix=J", headers)


def test_awss_presigned_example_verifies():
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={AKID}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date={STAMP}&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    signed = check("GET", "/test.txt", query, {"host": HOST})
    assert (
        signed.presigned and signed.expires == 86400 and signed.payload_hash == "UNSIGNED-PAYLOAD"
    )


def test_a_changed_byte_anywhere_does_not_match():
    headers = {
        "host": HOST,
        "range": "bytes=0-10",  # the example signed 0-9
        "x-amz-content-sha256": EMPTY,
        "x-amz-date": STAMP,
        "authorization": aws_header(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
    }
    with pytest.raises(sigv4.SignatureError) as error:
        check("GET", "/test.txt", "", headers)
    assert error.value.code == "SignatureDoesNotMatch" and error.value.status == 403
    headers["range"] = "bytes=0-9"
    with pytest.raises(sigv4.SignatureError, match="does not match"):
        check("GET", "/test.txt", "", headers, secret=SECRET + "x")


# Keys where decoding twice, `+` as space, or normalising `//` would sign another object.
KEYS = [
    "a/(x)+y=z*.json",
    "a/é ü/~!$&'@,;:.json",
    "a//double//slash.json",
    "a/%41.json",
    "with space/and+plus.json",
    "tilde~/日本語.json",
]


def botocore_signed(method: str, url: str, presign: bool = False, **extra: str):
    request = AWSRequest(
        method=method, url=url, headers={"x-amz-checksum-mode": "ENABLED", **extra}
    )
    credentials = Credentials(AKID, SECRET, "session-token-1")
    if presign:
        S3SigV4QueryAuth(credentials, "s3", "eu-west-1", expires=600).add_auth(request)
    else:
        request.context["payload_signing_enabled"] = False
        S3SigV4Auth(credentials, "s3", "eu-west-1").add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    headers = {k.lower(): v for k, v in prepared.headers.items()}
    headers.setdefault("host", parts.netloc)
    return parts.path, parts.query, headers


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("presign", [False, True], ids=["header", "presigned"])
def test_botocores_signature_on_awkward_keys_verifies(key, presign):
    from urllib.parse import quote

    url = f"http://127.0.0.1:9000/traces/{quote(key, safe='/~')}?list-type=2&prefix=a%2Fb%2Bc%20d"
    path, query, headers = botocore_signed("GET", url, presign=presign)
    signed = check("GET", path, query, headers)
    assert signed.security_token == "session-token-1" and signed.region == "eu-west-1"


def test_a_plus_in_the_query_is_a_plus_not_a_space():
    assert sigv4.split_query("prefix=a+b&x=%2B") == [("prefix", "a+b"), ("x", "+")]


def test_signed_headers_must_name_host_and_be_sorted():
    base = {"x-amz-date": STAMP, "x-amz-content-sha256": EMPTY}
    for listed in ("x-amz-date", "x-amz-date;host"):
        with pytest.raises(sigv4.SignatureError) as error:
            sigv4.parse({**base, "authorization": aws_header(listed, "0" * 64)}, [])
        assert error.value.code == "AuthorizationHeaderMalformed"


def test_the_scope_date_must_be_the_request_date():
    auth = aws_header("host;x-amz-date", "0" * 64)
    with pytest.raises(sigv4.SignatureError, match="scope's date"):
        sigv4.parse(
            {
                "authorization": auth,
                "x-amz-date": "20130525T000000Z",
                "x-amz-content-sha256": EMPTY,
            },
            [],
        )


def test_time_checks_skew_and_presign_expiry():
    headers = {
        "authorization": aws_header("host", "0" * 64),
        "x-amz-date": STAMP,
        "x-amz-content-sha256": EMPTY,
    }
    signed = sigv4.parse(headers, [])
    at = datetime(2013, 5, 24, tzinfo=UTC)
    sigv4.check_time(signed, at + timedelta(minutes=14))
    sigv4.check_time(signed, at - timedelta(minutes=14))
    for off in (timedelta(minutes=16), -timedelta(minutes=16)):
        with pytest.raises(sigv4.SignatureError) as error:
            sigv4.check_time(signed, at + off)
        assert error.value.code == "RequestTimeTooSkewed"
    presigned = sigv4.parse(
        {},
        sigv4.split_query(
            f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AKID}%2F20130524%2Fus-east-1%2Fs3"
            f"%2Faws4_request&X-Amz-Date={STAMP}&X-Amz-Expires=600&X-Amz-SignedHeaders=host"
            f"&X-Amz-Signature={'0' * 64}"
        ),
    )
    sigv4.check_time(presigned, at + timedelta(seconds=599))
    with pytest.raises(sigv4.SignatureError, match="expired"):
        sigv4.check_time(presigned, at + timedelta(seconds=601))


def test_sigv2_is_recognised_to_be_refused():
    assert sigv4.sigv2_attempt({"authorization": "AWS AKIA:abc="}, [])
    assert sigv4.sigv2_attempt({}, [("AWSAccessKeyId", "A"), ("Signature", "s"), ("Expires", "1")])
    assert not sigv4.sigv2_attempt({"authorization": "AWS4-HMAC-SHA256 Credential=..."}, [])
