"""Masked bodies remembered per masker: the same trace read again is answered from memory.

Readers come back to the same traces (a notebook re-run, a dashboard refresh, a retry, a page
of a listing read twice), and masking is a pure function of the body and the scope's masker.
Entries are keyed by the body's SHA-256, hold the masked bytes and the report they produced,
and are bounded in count and bytes; when full the memo starts over. A config reload builds
new maskers, so nothing masked under an older policy is ever served from here.
"""

from __future__ import annotations

import hashlib
import threading

from tracegate.masking.report import MaskReport

MAX_BODY = 1 << 20  # larger bodies are masked every time (they are rare and the memo small)
MAX_BYTES = 64 << 20
MAX_ENTRIES = 4096


class MaskedBodies:
    def __init__(self, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[tuple[str, str, int | None], tuple[bytes, MaskReport]] = {}
        self._bytes = 0
        self._max_bytes, self._max_entries = max_bytes, max_entries
        self._lock = threading.Lock()  # large bodies are masked in worker threads

    @staticmethod
    def key(
        body: bytes, kind: str, indent: int | None, digest: str | None = None
    ) -> tuple[str, str, int | None] | None:
        """`digest`: the body's SHA-256 when the caller has it already (the gateway does)."""
        if len(body) > MAX_BODY:
            return None
        return digest or hashlib.sha256(body).hexdigest(), kind, indent

    def get(self, key: tuple[str, str, int | None], report: MaskReport) -> bytes | None:
        """The masked body, with what masking it reported added to `report`."""
        with self._lock:
            entry = self._entries.get(key)
        if entry is None:
            return None
        masked, seen = entry
        report.merge(seen)
        return masked

    def put(self, key: tuple[str, str, int | None], masked: bytes, report: MaskReport) -> None:
        size = len(masked) + 256
        with self._lock:
            if self._bytes + size > self._max_bytes or len(self._entries) >= self._max_entries:
                self._entries, self._bytes = {}, 0
            self._entries[key] = (masked, report.copy())
            self._bytes += size
