"""Checking a client's SigV4 signature on an S3 request, the way S3 itself does.

The canonical request is rebuilt from what the client sent, exactly: the wire path decoded once
and re-encoded strictly, the raw query split by hand (a `+` is never a space), the headers the
client listed in `SignedHeaders` and nothing else, and its own `x-amz-content-sha256`. The host
is the configured public one (mitmproxy rewrites `Host` in reverse mode before any addon runs),
which also binds every signature to this gateway. Written out here rather than borrowed from
botocore's signer, whose helpers add headers of their own; the tests hold it to AWS's published
examples and to botocore's signatures.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

from tracegate.denial import Denial

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = timedelta(minutes=15)
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
PRESIGN_PARAMS = frozenset(
    {
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-expires",
        "x-amz-signedheaders",
        "x-amz-signature",
        "x-amz-security-token",
    }
)
_CREDENTIAL = re.compile(r"^([A-Za-z0-9]{16,128})/(\d{8})/([a-z0-9-]+)/([a-z0-9]+)/([a-z0-9_]+)$")
_HEADER_NAME = re.compile(r"^[a-z0-9-]+$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_DATE = "%Y%m%dT%H%M%SZ"


class SignatureError(Denial):
    """Why a signature is refused, with the S3 error code its clients understand."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, code, message, "signature")


@dataclass(frozen=True)
class SignedRequest:
    """What a request claims about its signature, parsed (not yet checked)."""

    access_key_id: str
    date: str  # YYYYMMDD of the scope
    region: str
    service: str
    timestamp: datetime
    signed_headers: tuple[str, ...]
    signature: str
    security_token: str | None
    payload_hash: str
    presigned: bool
    expires: int | None = None  # presigned: seconds the URL is valid from `timestamp`


def is_sigv4(headers: Mapping[str, str], query: Sequence[tuple[str, str]]) -> bool:
    """Whether the request carries a SigV4 signature, in its header or its query."""
    if headers.get("authorization", "").startswith(ALGORITHM):
        return True
    return any(name.lower() == "x-amz-algorithm" for name, _ in query)


def sigv2_attempt(headers: Mapping[str, str], query: Sequence[tuple[str, str]]) -> bool:
    """An AWS signature of the old kind (`AWS AKID:sig` or `?AWSAccessKeyId=...&Signature=`)."""
    if headers.get("authorization", "").startswith("AWS "):
        return True
    names = {name for name, _ in query}
    return "AWSAccessKeyId" in names and "Signature" in names


def split_query(raw_query: str) -> list[tuple[str, str]]:
    """The query's pairs as sent, each percent-decoded once; `+` stays a plus."""
    pairs = []
    for part in raw_query.split("&") if raw_query else []:
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def parse(headers: dict[str, str], query: Sequence[tuple[str, str]]) -> SignedRequest:
    """The signature's claims from the Authorization header or the presigned query."""
    params = {name.lower(): value for name, value in query}
    if "x-amz-algorithm" in params:
        return _parse_presigned(params)
    auth = headers.get("authorization", "")
    fields: dict[str, str] = {}
    for part in auth[len(ALGORITHM) :].split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(required):
            raise _malformed(f"the Authorization header has no {required}")
    stamp = headers.get("x-amz-date")
    if not stamp:
        raise _malformed("x-amz-date is missing (a Date header is not accepted)")
    payload = headers.get("x-amz-content-sha256")
    if not payload:
        raise SignatureError(400, "InvalidRequest", "x-amz-content-sha256 is missing")
    return _signed(
        fields["Credential"],
        stamp,
        fields["SignedHeaders"],
        fields["Signature"],
        headers.get("x-amz-security-token"),
        payload,
        presigned=False,
    )


def _parse_presigned(params: dict[str, str]) -> SignedRequest:
    if params["x-amz-algorithm"] != ALGORITHM:
        raise _malformed(f"X-Amz-Algorithm must be {ALGORITHM}")
    for required in ("x-amz-credential", "x-amz-date", "x-amz-signedheaders", "x-amz-signature"):
        if not params.get(required):
            raise _malformed(f"the presigned URL has no {required}")
    try:
        expires = int(params.get("x-amz-expires", ""))
    except ValueError:
        raise _malformed("X-Amz-Expires must be a number of seconds") from None
    if not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise _malformed(f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_SECONDS}")
    signed = _signed(
        params["x-amz-credential"],
        params["x-amz-date"],
        params["x-amz-signedheaders"],
        params["x-amz-signature"],
        params.get("x-amz-security-token"),
        params.get("x-amz-content-sha256", UNSIGNED_PAYLOAD),
        presigned=True,
    )
    return SignedRequest(**{**signed.__dict__, "expires": expires})


def _signed(
    credential: str,
    stamp: str,
    signed_headers: str,
    signature: str,
    token: str | None,
    payload: str,
    presigned: bool,
) -> SignedRequest:
    match = _CREDENTIAL.match(credential)
    if match is None:
        raise _malformed("the Credential is not AKID/date/region/service/aws4_request")
    akid, date, region, service, terminator = match.groups()
    if terminator != "aws4_request":
        raise _malformed("the credential scope must end in aws4_request")
    try:
        timestamp = datetime.strptime(stamp, _DATE).replace(tzinfo=UTC)
    except ValueError:
        raise _malformed(f"x-amz-date {stamp!r} is not YYYYMMDDTHHMMSSZ") from None
    if stamp[:8] != date:
        raise _malformed("the credential scope's date is not the date of x-amz-date")
    names = tuple(signed_headers.split(";"))
    if not all(_HEADER_NAME.match(n) for n in names) or list(names) != sorted(set(names)):
        raise _malformed("SignedHeaders must be sorted lower-case header names")
    if "host" not in names:
        raise _malformed("SignedHeaders must include host")
    if not _SIGNATURE.match(signature):
        raise _malformed("the Signature must be 64 hex digits")
    return SignedRequest(
        akid, date, region, service, timestamp, names, signature, token, payload, presigned
    )


def _malformed(message: str) -> SignatureError:
    return SignatureError(400, "AuthorizationHeaderMalformed", message)


def canonical_uri(raw_path: str) -> str:
    """Decode the wire path once, then encode everything but unreserved characters and `/`."""
    return quote(unquote(raw_path), safe="/~")


def canonical_query(query: Sequence[tuple[str, str]]) -> str:
    pairs = sorted((quote(n, safe="-_.~"), quote(v, safe="-_.~")) for n, v in query)
    return "&".join(f"{n}={v}" for n, v in pairs)


def canonical_request(
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    header_values: Callable[[str], list[str]],
    signed: SignedRequest,
) -> str:
    """The canonical request of the SigV4 spec, from exactly what the client signed."""
    if signed.presigned:
        query = [(n, v) for n, v in query if n.lower() != "x-amz-signature"]
    lines = []
    for name in signed.signed_headers:
        values = header_values(name)
        if not values:
            raise SignatureError(403, "SignatureDoesNotMatch", f"signed header {name} is missing")
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    return "\n".join(
        [
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(query),
            "".join(lines),
            ";".join(signed.signed_headers),
            signed.payload_hash,
        ]
    )


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def expected_signature(canonical: str, signed: SignedRequest, secret: str) -> str:
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    string_to_sign = "\n".join([ALGORITHM, signed.timestamp.strftime(_DATE), scope, digest])
    key = signing_key(secret, signed.date, signed.region, signed.service)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


def check_time(signed: SignedRequest, now: datetime) -> None:
    """Header signatures within the skew of now; presigned URLs until they expire."""
    behind = now - signed.timestamp > MAX_SKEW and not signed.presigned
    if signed.timestamp - now > MAX_SKEW or behind:
        raise SignatureError(
            403,
            "RequestTimeTooSkewed",
            "the difference between the request time and the current time is too large",
        )
    if signed.presigned:
        assert signed.expires is not None
        if now > signed.timestamp + timedelta(seconds=signed.expires):
            raise SignatureError(403, "AccessDenied", "Request has expired")


def verify(
    method: str,
    raw_path: str,
    query: Sequence[tuple[str, str]],
    header_values: Callable[[str], list[str]],
    signed: SignedRequest,
    secret: str,
) -> None:
    """Raise SignatureDoesNotMatch unless the client signed this request with `secret`."""
    canonical = canonical_request(method, raw_path, query, header_values, signed)
    wanted = expected_signature(canonical, signed, secret)
    if not hmac.compare_digest(wanted, signed.signature):
        raise SignatureError(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided",
        )
