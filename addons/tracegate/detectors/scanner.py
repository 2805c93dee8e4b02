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

from tracegate.budget import check as check_budget
from tracegate.detectors.base import Detector
from tracegate.detectors.views import normalised

try:  # hyperscan ships manylinux wheels; the fallback keeps other platforms working
    import hyperscan
except ImportError:  # pragma: no cover - exercised by forcing the fallback in tests
    hyperscan = None

# Two characters: an anchor may consume one character on each side of a value (the phone
# anchor spells its lookarounds so), and `re.finditer` never reuses what a match consumed.
SEPARATOR = "\x00\x00"
CHUNK = 1 << 18
MEMO_ENTRIES = 1 << 17


# Compiled databases, serialised, by their anchors and flags: compiling every detector's anchor
# takes most of a second, and every scope's masker (and every config reload) asks for the same.
_COMPILED: dict[tuple[tuple[bytes, ...], tuple[int, ...]], bytes] = {}
MAX_COMPILED = 64


def compile_database(expressions: list[bytes], flags: list[int]) -> hyperscan.Database:
    database = hyperscan.Database()
    database.compile(
        expressions=expressions,
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=flags,
    )
    return database


def database_for(expressions: list[bytes], flags: list[int]) -> hyperscan.Database:
    """A database for these anchors, compiled once per process and loaded from its serialised
    form after that; each caller still gets a database (and scratch space) of its own."""
    key = (tuple(expressions), tuple(flags))
    blob = _COMPILED.get(key)
    if blob is None:
        database = compile_database(expressions, flags)
        if len(_COMPILED) >= MAX_COMPILED:
            _COMPILED.clear()
        _COMPILED[key] = hyperscan.dumpb(database)
        return database
    database = hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK)
    database.scratch = hyperscan.Scratch(database)
    return database


class FindingsCache:
    """What was found in short strings, kept across bodies: traces share system prompts, tool
    definitions and whole histories, and the same traces are read again and again. Bounded in
    entries and characters; when full it starts over (no per-entry bookkeeping)."""

    MAX_TEXT = 8192
    MAX_CHARS = 16 << 20
    MAX_ENTRIES = 1 << 16

    def __init__(self) -> None:
        self._found: dict[str, list[tuple[int, int, int]]] = {}
        self._chars = 0

    def get(self, text: str) -> list[tuple[int, int, int]] | None:
        return self._found.get(text)

    def update(self, texts: Sequence[str], found: Sequence[list[tuple[int, int, int]]]) -> None:
        for text, hits in zip(texts, found, strict=True):
            if len(text) > self.MAX_TEXT:
                continue
            if self._chars + len(text) > self.MAX_CHARS or len(self._found) >= self.MAX_ENTRIES:
                self._found, self._chars = {}, 0  # a new dict: readers in other threads are safe
            self._found[text] = hits
            self._chars += len(text)


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
        self.cache = FindingsCache()
        self.engine = "hyperscan" if use_hyperscan and hyperscan is not None else "re"
        self._probe = Scanner._probe_scanner(self.detectors, probe_patterns, self.engine)
        if not self.detectors:
            self._db = None
        elif self.engine == "hyperscan":
            # Each anchor reports at most once per text: a hit only says "look closer".
            single = hyperscan.HS_FLAG_SINGLEMATCH
            flags = [
                (hyperscan.HS_FLAG_CASELESS if d.caseless else 0) | single for d in self.detectors
            ]
            self._db = database_for([d.anchor.encode() for d in self.detectors], flags)
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
        unique: dict[str, int] = {}
        for text in texts:
            unique.setdefault(text, len(unique))
        distinct = list(unique)
        hit = {distinct[index] for index, _ in scanner._candidates(distinct)}
        return {index for index, text in enumerate(texts) if text in hit}

    def scan(
        self, texts: Sequence[str], memo: dict[str, list[tuple[int, int, int]]] | None = None
    ) -> list[Finding]:
        """Findings in each text. Each distinct text is searched once: traces repeat the same
        strings (a chat span carries the whole conversation so far), and `memo`, when given,
        carries what was found across calls (the batches of one body)."""
        if not texts or not self.detectors:
            return []
        if memo is None:
            memo = {}
        shared = self.cache
        todo: dict[str, None] = {}
        for text in texts:
            if text not in memo:
                known = shared.get(text)
                if known is not None:
                    memo[text] = known
                else:
                    todo[text] = None
        if todo:
            unique = list(todo)
            # Detectors read each text's normalised view (escapes, invisible and look-alike
            # characters, percent- and base64-encoding undone); spans map back to the text.
            views = [normalised(text) for text in unique]
            read = [view.text if view else text for view, text in zip(views, unique, strict=True)]
            found: list[list[tuple[int, int, int]]] = [[] for _ in unique]
            for text_index, detector_index in sorted(self._candidates(read)):
                check_budget()
                detector = self.detectors[detector_index]
                view = views[text_index]
                for start, end in detector.find(read[text_index]):
                    if view is not None:
                        start, end = view.original_span(start, end)
                    found[text_index].append((start, end, detector_index))
            if len(memo) > MEMO_ENTRIES:
                memo.clear()
            memo.update(zip(unique, found, strict=True))
            shared.update(unique, found)
            del todo, unique, views, read
        findings: list[Finding] = []
        detectors = self.detectors
        for index, text in enumerate(texts):
            hits = memo.get(text)
            if hits:
                findings.extend(Finding(index, s, e, detectors[d]) for s, e, d in hits)
        return findings

    def _candidates(self, texts: Sequence[str]) -> set[tuple[int, int]]:
        """(text index, detector index) pairs whose anchor matched inside that text."""
        if self.engine == "hyperscan":
            found: set[tuple[int, int]] = set()
            current = 0

            def on_match(detector: int, _from: int, _to: int, _flags: int, _ctx: object) -> None:
                found.add((current, detector))

            scan = self._db.scan
            for current, text in enumerate(texts):  # noqa: B007 - read by on_match
                scan(text.encode("utf-8", "surrogatepass"), match_event_handler=on_match)
            return found
        return self._re_candidates(texts)

    def _re_candidates(self, texts: Sequence[str]) -> set[tuple[int, int]]:
        """The same with Python's `re`: texts joined in batches of about CHUNK characters, so
        the joined buffer stays small however large the document is."""
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
        clean = [i for i in batch if "\x00" not in texts[i]]
        found: set[tuple[int, int]] = set()
        if len(clean) != len(batch):  # a NUL inside a string would blur the boundaries
            for i in set(batch) - set(clean):
                found.update((i, d) for d in range(len(self.detectors)))
        if not clean:
            return found
        joined = SEPARATOR.join([texts[i] for i in clean])
        ends: list[tuple[int, int]] = []  # (detector, end offset) in `joined`
        starts = _starts(map(len, (texts[i] for i in clean)))
        for detector, anchor in enumerate(self._anchors):
            ends.extend((detector, m.end()) for m in anchor.finditer(joined))
        for detector, end in set(ends):
            found.add((clean[bisect.bisect_right(starts, end - 1) - 1], detector))
        return found


def _starts(lengths) -> list[int]:
    """Offsets where each joined text begins (texts are separated by SEPARATOR)."""
    gap = len(SEPARATOR)
    return [0, *itertools.accumulate(n + gap for n in lengths)][:-1]
