"""Detector accuracy on the labelled corpus: recall (and partial leaks) per type, kept% per
look-alike type.

    .venv/bin/python scripts/bench/accuracy.py [--per-kind 120] [--seed N] [--missed 3]

The corpus (`tests/corpus`) plants values from Faker (14 locales), mimesis (12 locales) and
the providers' token formats in prose, whole values, named keys and JSON inside strings (one
and two levels deep), in OTLP spans, Langfuse traces and chat lines. A value counts as caught
when no form of it (raw or JSON-escaped) survives in its document's masked output; "partial"
counts caught values of which a piece of 5+ letters or digits still shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "addons"), str(REPO)]

from tests.corpus import CONTROL_KINDS, PERSONAL_KINDS, SECRET_KINDS, build_corpus  # noqa: E402
from tests.corpus.measure import measure  # noqa: E402
from tracegate.config import ScopeConfig  # noqa: E402
from tracegate.masking import Masker, MaskReport  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=120)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--missed", type=int, default=0, help="show up to N missed values")
    args = parser.parse_args()
    corpus = build_corpus(per_kind=args.per_kind, seed=args.seed)
    masker = Masker(ScopeConfig(operations=["GetObject"], prefixes=[""]), b"bench-key")
    started = time.perf_counter()
    result = measure(corpus, lambda document: masker.mask_document(document, MaskReport()))
    elapsed = time.perf_counter() - started
    print(
        f"{len(corpus.documents)} documents, {len(corpus.planted)} planted values, {elapsed:.1f} s"
    )
    for title, kinds, label in (
        ("secrets", SECRET_KINDS, "caught"),
        ("personal data", PERSONAL_KINDS, "caught"),
        ("look-alikes", [f"control:{k}" for k in CONTROL_KINDS], "kept"),
    ):
        print(f"\n{title:<28}{label:>8}{'partial':>9}{'n':>6}")
        for kind in kinds:
            name = kind.removeprefix("control:")
            print(
                f"{name:<28}{result.rate(kind):>8.1%}{result.partial[kind]:>9}{result.total[kind]:>6}"
            )
            for value in result.missed.get(kind, [])[: args.missed]:
                print(f"    missed: {value[:90]!r}")
        print(f"{'all ' + title:<28}{result.category_rate(kinds):>8.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
