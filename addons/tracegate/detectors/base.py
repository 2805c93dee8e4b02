"""What a detector is: a cheap anchor for the prefilter, an exact finder, and a validator."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

Span = tuple[int, int]


@dataclass(frozen=True)
class Detector:
    """One kind of sensitive value.

    `anchor` is a hyperscan-compatible pattern that matches inside every true finding (it only
    selects which strings are worth a closer look); `pattern` finds exact spans in those
    strings (its `value` group, when present, is the part to mask); `validate` rejects
    look-alikes (bad check digits, placeholders...).
    """

    name: str
    group: str  # "secrets" | "pii"
    anchor: str
    pattern: re.Pattern[str] | None = None
    validate: Callable[[str], bool] | None = None
    finder: Callable[[str], Iterator[Span]] | None = None
    caseless: bool = False
    keep: int = 4  # characters kept by `partial`
    provider: str = ""  # whose format it is (secret rules)
    # Fields named for what they hold: `key_policy(key)` says "whole" (the string under that
    # key is judged as a whole by `whole`, e.g. a bare number under `phone`) or "skip" (this
    # detector ignores strings under that key, e.g. phones under `order_id`).
    whole: Callable[[str], bool] | None = None
    key_policy: Callable[[str], str | None] | None = None

    @property
    def label(self) -> str:
        return self.name.upper()

    def find(self, text: str) -> Iterator[Span]:
        if self.finder is not None:
            yield from self.finder(text)
            return
        assert self.pattern is not None
        for match in self.pattern.finditer(text):
            group = "value" if "value" in self.pattern.groupindex else 0
            start, end = match.span(group)
            if start < 0 or start == end:
                continue
            if self.validate is None or self.validate(match.group(group)):
                yield start, end


def shannon_entropy(text: str) -> float:
    if not text:
        return 0.0
    counts = Counter(text)
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in counts.values())
