"""One scan over all the strings of a document.

The strings are joined into one buffer and scanned once for every detector's anchor (with
hyperscan when it is installed, else Python's `re`); only the strings an anchor hit are then
searched with that detector's exact pattern and validator. Most strings in a trace hold nothing
sensitive, so most of the text is only ever touched by the prefilter.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from tracegate.detectors.base import Detector

try:  # hyperscan ships manylinux wheels; the fallback keeps other platforms working
    import hyperscan
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    hyperscan = None

SEPARATOR = "\x00"
CHUNK = 1 << 18


@dataclass(frozen=True, slots=True)
class Finding:
    text_index: int
    start: int
    end: int
    detector: Detector


class Scanner:
    """Finds detector hits in many texts at once.

    `probe_patterns` are extra anchors used only by `probe`, which answers which texts could
    hold anything at all (a detector anchor or a probe pattern matched)."""

    def __init__(
        self,
        detectors: Sequence[Detector],
        use_hyperscan: bool = True,
        probe_patterns: Sequence[str] = (),
    ) -> None:
        self.detectors = list(detectors)
        self.engine = "hyperscan" if use_hyperscan and hyperscan is not None else "re"
        self._probe = Scanner._probe_scanner(self.detectors, probe_patterns, self.engine)
        if not self.detectors:
            self._db = None
        elif self.engine == "hyperscan":
            self._db = hyperscan.Database()
            flags = [hyperscan.HS_FLAG_CASELESS if d.caseless else 0 for d in self.detectors]
            self._db.compile(
                expressions=[d.anchor.encode() for d in self.detectors],
                ids=list(range(len(self.detectors))),
                elements=len(self.detectors),
                flags=flags,
            )
        else:
            self._anchors = [
                re.compile(d.anchor, re.IGNORECASE if d.caseless else 0) for d in self.detectors
            ]

    @staticmethod
    def _probe_scanner(
        detectors: list[Detector], patterns: Sequence[str], engine: str
    ) -> Scanner | None:
        if not patterns:
            return None
        extra = [Detector(f"probe{i}", "probe", p, caseless=True) for i, p in enumerate(patterns)]
        return Scanner([*detectors, *extra], use_hyperscan=engine == "hyperscan")

    def probe(self, texts: Sequence[str]) -> set[int]:
        """Indices of the texts in which any anchor (or probe pattern) matched."""
        scanner = self._probe or self
        if not texts or not scanner.detectors:
            return set()
        return {index for index, _ in scanner._candidates(texts)}

    def scan(self, texts: Sequence[str]) -> list[Finding]:
        if not texts or not self.detectors:
            return []
        candidates = self._candidates(texts)
        findings: list[Finding] = []
        for text_index, detector_index in sorted(candidates):
            detector = self.detectors[detector_index]
            for start, end in detector.find(texts[text_index]):
                findings.append(Finding(text_index, start, end, detector))
        return findings

    def _candidates(self, texts: Sequence[str]) -> set[tuple[int, int]]:
        """(text index, detector index) pairs whose anchor matched inside that text.

        Texts are scanned in batches of about CHUNK characters, so the joined buffer (and its
        encoded copy) stays small however large the document is.
        """
        found: set[tuple[int, int]] = set()
        batch: list[int] = []
        size = 0
        for index, text in enumerate(texts):
            batch.append(index)
            size += len(text) + 1
            if size >= CHUNK:
                found |= self._batch_candidates(texts, batch)
                batch, size = [], 0
        if batch:
            found |= self._batch_candidates(texts, batch)
        return found

    def _batch_candidates(self, texts: Sequence[str], batch: list[int]) -> set[tuple[int, int]]:
        clean = [i for i in batch if SEPARATOR not in texts[i]]
        found: set[tuple[int, int]] = set()
        if len(clean) != len(batch):  # a NUL inside a string would blur the boundaries
            for i in set(batch) - set(clean):
                found.update((i, d) for d in range(len(self.detectors)))
        if not clean:
            return found
        joined = SEPARATOR.join([texts[i] for i in clean])
        ends: list[tuple[int, int]] = []  # (detector, end offset) in `joined`
        if self.engine == "hyperscan":
            data = joined.encode("utf-8", "surrogatepass")
            del joined
            # Byte offsets of each text: split the (chunk-sized) buffer at the separators.
            starts = _starts(map(len, data.split(SEPARATOR.encode())))

            def on_match(detector: int, _from: int, to: int, _flags: int, _ctx: object) -> None:
                ends.append((detector, to))

            self._db.scan(data, match_event_handler=on_match)
        else:
            starts = _starts(map(len, (texts[i] for i in clean)))
            for detector, anchor in enumerate(self._anchors):
                ends.extend((detector, m.end()) for m in anchor.finditer(joined))
        for detector, end in set(ends):
            found.add((clean[bisect.bisect_right(starts, end - 1) - 1], detector))
        return found


def _starts(lengths) -> list[int]:
    """Offsets where each joined text begins (texts are separated by one character)."""
    return [0, *itertools.accumulate(n + 1 for n in lengths)][:-1]
