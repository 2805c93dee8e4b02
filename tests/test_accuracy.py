"""Recall and look-alike preservation on a labelled corpus (faker, fixed seed)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from tracegate.config import ScopeConfig
from tracegate.demo.corpus import CONTROL_KINDS, PERSONAL_KINDS, SECRET_KINDS, build_corpus
from tracegate.masking import Masker, MaskReport

PER_KIND = 120


@pytest.fixture(scope="module")
def masked():
    corpus = build_corpus(per_kind=PER_KIND)
    masker = Masker(ScopeConfig(operations=["GetObject"], prefixes=[""]), b"accuracy-key")
    outputs = []
    for _, document in corpus.documents:
        original = json.loads(json.dumps(document))
        outputs.append((original, masker.mask_document(document, MaskReport())))
    # Values can sit one or two JSON encodings deep (JSON inside a string inside JSON).
    text = "\n".join(json.dumps(out, ensure_ascii=False) for _, out in outputs)
    return corpus, outputs, rates(corpus, text)


def present(value: str, text: str) -> bool:
    once = json.dumps(value, ensure_ascii=False)[1:-1]
    twice = json.dumps(once, ensure_ascii=False)[1:-1]
    return value in text or once in text or twice in text


def rates(corpus, text) -> dict[str, float]:
    total, good = Counter(), Counter()
    for planted in corpus.planted:
        total[planted.kind] += 1
        survived = present(planted.value, text)
        good[planted.kind] += survived if planted.is_control else not survived
    return {kind: good[kind] / total[kind] for kind in total}


@pytest.mark.parametrize("kind", SECRET_KINDS)
def test_secret_recall_is_at_least_99_percent(masked, kind):
    assert masked[2][kind] >= 0.99


@pytest.mark.parametrize("kind", PERSONAL_KINDS)
def test_personal_data_recall_is_at_least_95_percent(masked, kind):
    assert masked[2][kind] >= 0.95


@pytest.mark.parametrize("kind", CONTROL_KINDS)
def test_look_alike_controls_are_preserved_at_least_98_percent(masked, kind):
    assert masked[2][f"control:{kind}"] >= 0.98


def test_the_corpus_covers_every_shape_and_kind(masked):
    corpus, _, _ = masked
    assert {shape for shape, _ in corpus.documents} == {"otlp", "langfuse", "chat_line"}
    kinds = Counter(p.kind for p in corpus.planted)
    assert all(kinds[k] == PER_KIND for k in SECRET_KINDS + PERSONAL_KINDS)


def shape(node: Any) -> Any:
    """The structure of a document: keys and types, JSON inside strings included."""
    if isinstance(node, dict):
        return {k: shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [shape(v) for v in node]
    if isinstance(node, str):
        stripped = node.strip()
        if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
            try:
                return ("json", shape(json.loads(stripped)))
            except ValueError:
                pass
        return "str"
    return type(node).__name__


def test_masked_documents_keep_the_same_json_structure(masked):
    _, outputs, _ = masked
    for original, out in outputs:
        assert shape(out) == shape(original)
