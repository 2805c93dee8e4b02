"""Reading an upstream body safely: which kind of document it is, decoded within a size limit.

mitmproxy's own decoding has no size limit (a gzip bomb expands without bound), so bodies are
decoded here with a cap, and anything we do not understand is refused rather than passed on.
"""

from __future__ import annotations

import zlib

from tracegate.denial import Denial

JSON_TYPES = {"application/json", "text/json"}
JSONL_TYPES = {
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
}
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonlines")


def unsupported(reason: str) -> Denial:
    return Denial(502, "UnsupportedContent", reason)


def document_kind(content_type: str | None, key: str | None) -> str:
    """'json' or 'jsonl', from the Content-Type, else the key's suffix; otherwise refuse."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media in JSONL_TYPES:
        return "jsonl"
    if media in JSON_TYPES or media.endswith("+json"):
        return "json"
    name = (key or "").lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    raise unsupported(
        f"cannot mask content type {media or '(none)'!r} for {key or 'this object'}; "
        "only JSON and JSONL traces are served"
    )


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo gzip/deflate with an output cap; refuse stacked or unknown encodings."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        data = raw
    elif encoding in ("gzip", "x-gzip", "deflate"):
        wbits = 47 if encoding != "deflate" else 15
        decompressor = zlib.decompressobj(wbits)
        try:
            data = decompressor.decompress(raw, limit + 1)
        except zlib.error:
            if encoding != "deflate":
                raise unsupported(f"body is not valid {encoding}") from None
            try:  # raw deflate, as some servers send it
                decompressor = zlib.decompressobj(-15)
                data = decompressor.decompress(raw, limit + 1)
            except zlib.error:
                raise unsupported("body is not valid deflate") from None
        if decompressor.unconsumed_tail and len(data) <= limit:
            raise unsupported("compressed body did not decode completely")
    else:
        raise unsupported(f"unsupported Content-Encoding {content_encoding!r}")
    if len(data) > limit:
        raise body_too_large(limit)
    return data


def body_too_large(limit: int) -> Denial:
    return Denial(
        502, "BodyTooLarge", f"the store's response exceeds the gateway's limit of {limit} bytes"
    )
