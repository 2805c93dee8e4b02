"""S3 as tracegate sees it: which read a request is, and how to answer like S3 would.

Requests are path-style (`/bucket/key`) against the one bucket the gateway fronts. The path is
canonicalised before any decision; anything that is not a plain read (writes, ACLs, presigned
query auth, S3 Select, other subresources) is refused here, before policy is even asked.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from tracegate.denial import Denial, bad_request, forbidden
from tracegate.resources import (
    Outside,
    key_in_scope,
    outside_prefixes,
    prefix_overlaps,
    within_prefixes,
)

if TYPE_CHECKING:
    from tracegate.access import ScopeResources

S3_READ_OPERATIONS = frozenset(
    {"GetObject", "HeadObject", "ListObjectsV2", "ListObjects", "HeadBucket"}
)
# Operations whose response body is a trace document that must be masked.
OBJECT_OPERATIONS = frozenset({"GetObject", "HeadObject"})
LIST_OPERATIONS = frozenset({"ListObjectsV2", "ListObjects"})
DEFAULT_MAX_KEYS = 1000

_PRESIGN_PARAMS = {"x-amz-signature", "x-amz-credential", "signature", "awsaccesskeyid"}
_OBJECT_PARAMS = {"x-id"}
_LIST_V2_PARAMS = {
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "continuation-token",
    "start-after",
    "encoding-type",
    "fetch-owner",
    "x-id",
}
_LIST_V1_PARAMS = {"prefix", "delimiter", "max-keys", "marker", "encoding-type", "x-id"}
_DOUBLE_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


@dataclass(frozen=True)
class Access:
    """What a request asks for, canonicalised: the input to policy and to the audit row."""

    operation: str
    bucket: str
    key: str | None = None
    prefix: str | None = None

    @property
    def resource(self) -> str:
        if self.key is not None:
            return f"s3://{self.bucket}/{self.key}"
        if self.prefix is not None:
            return f"s3://{self.bucket}/{self.prefix}*"
        return f"s3://{self.bucket}"

    def outside(self, scope: ScopeResources) -> Outside | None:
        return outside_prefixes(self.key, self.prefix, scope.prefixes)

    def within(self, prefixes: Sequence[str]) -> bool:
        return within_prefixes(self.key, self.prefix, prefixes)

    def listing_size(self, query: Sequence[tuple[str, str]]) -> int | None:
        """`max-keys` of a listing (S3 lists up to 1000 when it is absent or not a number)."""
        if self.operation not in LIST_OPERATIONS:
            return None
        for name, value in query:
            if name.lower() == "max-keys":
                try:
                    return int(value)
                except ValueError:
                    return DEFAULT_MAX_KEYS
        return DEFAULT_MAX_KEYS

    def upstream_path(self) -> str:
        """The canonical, percent-encoded path sent to the store (and signed)."""
        if self.key is None:
            return f"/{self.bucket}"
        return "/" + quote(f"{self.bucket}/{self.key}", safe="/~")


def virtual_bucket(host: str, public_host: str) -> str | None:
    """The bucket a virtual-hosted request names (`Host: <bucket>.<public_host>`), if it is one."""
    bucket, _, rest = host.lower().partition(".")
    return bucket if bucket and rest == public_host.lower() else None


def path_style(raw_path: str, host: str, public_host: str | None) -> str:
    """A virtual-hosted request (path `/key`) as the path-style one it stands for
    (`/bucket/key`); any other request as it came."""
    bucket = virtual_bucket(host, public_host) if public_host else None
    return f"/{bucket}{raw_path}" if bucket and raw_path.startswith("/") else raw_path


def canonical_parts(raw_path: str) -> tuple[str, str | None]:
    """Split `/bucket/key...` into bucket and key, refusing anything ambiguous."""
    if not raw_path.startswith("/"):
        raise bad_request("request target must be an absolute path like /bucket/key")
    decoded = unquote(raw_path)
    if _DOUBLE_ENCODED.search(decoded):
        raise bad_request("path is percent-encoded twice")
    if "\x00" in decoded or "\\" in decoded:
        raise bad_request("path contains a NUL byte or a backslash")
    bucket, _, key = decoded[1:].partition("/")
    if not bucket:
        raise forbidden("listing buckets is not allowed")
    segments = key.split("/")
    if any(s in (".", "..") for s in segments) or bucket in (".", ".."):
        raise bad_request("path contains '.' or '..' segments")
    if "//" in decoded:
        raise bad_request("path contains an empty segment ('//')")
    return bucket, key or None


def parse_request(
    method: str, raw_path: str, query: Sequence[tuple[str, str]], bucket: str
) -> Access:
    """Classify an S3 request, or raise a Denial saying why it is not an allowed read."""
    params = {k.lower(): v for k, v in query}
    if len(params) != len(query):
        seen: set[str] = set()
        repeated = next(k.lower() for k, _ in query if k.lower() in seen or seen.add(k.lower()))
        raise bad_request(
            f"query parameter {repeated!r} is repeated; each parameter may appear once "
            "(the gateway decides on exactly what it forwards)"
        )
    if _PRESIGN_PARAMS & params.keys():
        raise forbidden("presigned (query-string) authentication is not accepted")
    req_bucket, key = canonical_parts(raw_path)
    if req_bucket != bucket:
        raise forbidden(f"bucket {req_bucket!r} is not served by this gateway")
    method = method.upper()
    if method not in ("GET", "HEAD"):
        raise forbidden(f"{method} is not a read; only GET and HEAD reach the store")
    if key is not None:
        _only(params, _OBJECT_PARAMS, "object")
        return Access("GetObject" if method == "GET" else "HeadObject", bucket, key=key)
    if method == "HEAD":
        _only(params, {"x-id"}, "bucket")
        return Access("HeadBucket", bucket)
    if params.get("list-type") == "2":
        _only(params, _LIST_V2_PARAMS, "list")
        return Access("ListObjectsV2", bucket, prefix=params.get("prefix", ""))
    _only(params, _LIST_V1_PARAMS, "list")
    return Access("ListObjects", bucket, prefix=params.get("prefix", ""))


def _only(params: dict[str, str], allowed: set[str], what: str) -> None:
    extra = sorted(params.keys() - allowed)
    if extra:
        raise forbidden(f"{what} request parameter/subresource {extra[0]!r} is not allowed")


def error_body(denial: Denial, resource: str, request_id: str) -> bytes:
    """S3's XML error shape, so SDKs surface the code and the reason."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{escape(denial.code)}</Code><Message>{escape(denial.reason)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{escape(request_id)}</RequestId>"
        "</Error>"
    ).encode()


@dataclass(frozen=True)
class ListingFilterResult:
    body: bytes
    kept: int
    removed: int


def filter_listing(
    body: bytes,
    prefixes: Sequence[str],
    rename: Callable[[list[str]], list[str]] | None = None,
) -> ListingFilterResult:
    """Remove keys and common prefixes the role may not see from a ListBucketResult, and
    every part of it that would name them (markers) or describe the unmasked objects."""
    ElementTree.register_namespace("", S3_NS)
    root = ElementTree.fromstring(body)
    ns = {"s3": S3_NS} if root.tag.startswith("{") else {}
    q = (lambda t: f"s3:{t}") if ns else (lambda t: t)
    url_encoded = (root.findtext(q("EncodingType"), namespaces=ns) or "").lower() == "url"

    def decoded(text: str | None) -> str:
        return unquote(text or "") if url_encoded else (text or "")

    kept = removed = 0
    for contents in root.findall(q("Contents"), ns):
        if key_in_scope(decoded(contents.findtext(q("Key"), namespaces=ns)), prefixes):
            kept += 1
            # The store's ETag is the MD5 of the unmasked object (a guessing oracle), the
            # owner names a person: neither describes what the gateway serves.
            for name in ("ETag", "Owner", "ChecksumAlgorithm", "ChecksumType"):
                for element in contents.findall(q(name), ns):
                    contents.remove(element)
        else:
            root.remove(contents)
            removed += 1
    # Markers the store echoes or proposes may name keys outside the scope.
    for name in ("NextMarker", "StartAfter", "Marker"):
        for element in root.findall(q(name), ns):
            if element.text and not key_in_scope(decoded(element.text), prefixes):
                root.remove(element)
    for common in root.findall(q("CommonPrefixes"), ns):
        if prefix_overlaps(decoded(common.findtext(q("Prefix"), namespaces=ns)), prefixes):
            kept += 1
        else:
            root.remove(common)
            removed += 1
    key_count = root.find(q("KeyCount"), ns)
    if key_count is not None:
        key_count.text = str(kept)
    if rename is not None:  # key names can hold personal data: the detectors read them too
        names = root.findall(q("Contents") + "/" + q("Key"), ns) + root.findall(
            q("CommonPrefixes") + "/" + q("Prefix"), ns
        )
        texts = [decoded(element.text) for element in names]
        for element, new in zip(names, rename(texts), strict=True):
            if new != decoded(element.text):
                element.text = quote(new, safe="/") if url_encoded else new
    out = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return ListingFilterResult(out, kept, removed)


# -- rewritten object bodies: make the headers tell the truth about the new bytes ----------

CHECKSUM_HEADERS = (
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
)


# The only store headers served (everything else, e.g. x-amz-content-sha256, Content-Disposition,
# Set-Cookie, Location, x-amz-meta-*, the store's ETag and checksums, is dropped): they
# describe the request or the object's storage, never the unmasked bytes.
SERVED_STORE_HEADERS = frozenset(
    {
        "content-type", "last-modified", "date", "x-amz-request-id", "x-amz-id-2",
        "x-amz-version-id", "x-amz-storage-class", "x-amz-server-side-encryption",
        "cache-control", "content-language", "expires",
    }
)  # fmt: skip


def served_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() in SERVED_STORE_HEADERS}


def etag_for(body: bytes) -> str:
    return '"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"'


def checksum_for(header: str, body: bytes) -> str | None:
    """The checksum header value for body, or None where we cannot compute that algorithm."""
    if header == "x-amz-checksum-crc32":
        return base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    if header == "x-amz-checksum-sha1":
        return base64.b64encode(hashlib.sha1(body, usedforsecurity=False).digest()).decode()
    if header == "x-amz-checksum-sha256":
        return base64.b64encode(hashlib.sha256(body).digest()).decode()
    return None


def rewritten_object_headers(
    present: Iterable[str], full_body: bytes, partial: bool
) -> dict[str, str | None]:
    """Header changes for a masked object: new ETag and checksums; None means remove.

    Checksums we cannot recompute are removed (SDKs skip validation when none is present);
    ranged responses never carry a full-object checksum.
    """
    changes: dict[str, str | None] = {"etag": etag_for(full_body), "content-md5": None}
    for header in present:
        name = header.lower()
        if name in CHECKSUM_HEADERS:
            changes[name] = None if partial else checksum_for(name, full_body)
        elif name == "x-amz-checksum-type":
            changes[name] = None
    return changes


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end}/{total}"


def parse_range(header: str, total: int) -> ByteRange:
    """One `bytes=` range against the masked size; several ranges or garbage are refused."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise Denial(416, "InvalidRange", "only a single 'bytes=' range is supported")
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            length = int(last)
            if length <= 0:
                raise ValueError
            start, end = max(total - length, 0), total - 1
        else:
            start = int(first)
            end = int(last) if last else total - 1
    except ValueError:
        raise Denial(416, "InvalidRange", f"unparsable range {header!r}") from None
    end = min(end, total - 1)
    if start > end or start >= total:
        raise Denial(416, "InvalidRange", f"range {header!r} is outside the {total}-byte object")
    return ByteRange(start, end)
