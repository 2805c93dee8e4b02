"""How well a masker did on a labelled corpus: recall per kind, partial leaks, look-alikes kept."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.corpus import Corpus

PIECE = re.compile(r"[^\W_]{4,}")
# What masking writes in place of a value: "[REDACTED:EMAIL]", "[EMAIL:3f9a...]", "hmac:...".
LABEL = re.compile(r"\[[A-Z0-9_]+(?::[A-Za-z0-9_-]+)?\]|hmac:[0-9a-f]+")


def encodings(value: str) -> list[str]:
    """The value as it appears in a JSON text: raw, and one or two JSON string encodings deep
    (with non-ASCII characters kept or written as \\u escapes)."""
    forms = {value}
    for ascii_only in (False, True):
        once = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        twice = json.dumps(once, ensure_ascii=ascii_only)[1:-1]
        forms.update((once, twice))
    return list(forms)


def present(value: str, text: str) -> bool:
    return any(form in text for form in encodings(value))


@dataclass
class Accuracy:
    total: Counter = field(default_factory=Counter)
    good: Counter = field(default_factory=Counter)  # caught (sensitive) or kept (control)
    partial: Counter = field(default_factory=Counter)  # not whole, but a piece survived
    missed: dict[str, list[str]] = field(default_factory=dict)

    def rate(self, kind: str) -> float:
        return self.good[kind] / self.total[kind] if self.total[kind] else 1.0

    def category_rate(self, kinds: list[str]) -> float:
        total = sum(self.total[k] for k in kinds)
        return sum(self.good[k] for k in kinds) / total if total else 1.0


def measure(corpus: Corpus, mask: Callable[[Any], Any]) -> Accuracy:
    """Mask every document (a deep copy) and check each planted value in its own output."""
    outputs = []
    for _, document in corpus.documents:
        masked = mask(json.loads(json.dumps(document)))
        outputs.append(json.dumps(masked, ensure_ascii=False))
    result = Accuracy()
    for planted in corpus.planted:
        text = outputs[planted.document]
        kind = planted.kind
        result.total[kind] += 1
        survived = present(planted.value, text)
        if planted.is_control:
            result.good[kind] += survived
            if not survived:
                result.missed.setdefault(kind, []).append(planted.value)
            continue
        if survived:
            result.missed.setdefault(kind, []).append(planted.value)
            continue
        result.good[kind] += 1
        pieces = [p for p in PIECE.findall(planted.value) if not p.isdigit() or len(p) >= 4]
        unlabelled = LABEL.sub(" ", text)
        if any(present(p, unlabelled) for p in pieces if len(p) >= 5):
            result.partial[kind] += 1
    return result
