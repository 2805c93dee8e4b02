"""Rewrites trace documents to what one scope may see: a field allow-list, then masks.

Pure and synchronous: documents in, documents and a `MaskReport` out. The allow-list is applied
first (everything not listed is dropped), then each mask rule on what remains.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tracegate.config import MaskRule, ScopeConfig
from tracegate.detectors import for_scope
from tracegate.masking import codec
from tracegate.masking.memo import MaskedBodies
from tracegate.masking.paths import CompiledPath, Path, compile_path
from tracegate.masking.report import MaskReport
from tracegate.masking.text import DocumentTooDeep, TextMasker

_KEEP_ALL = object()
# A line that every lazily loaded detector reads.
WARM_UP_TEXT = (
    "Dear Anna Kowalska, call +44 20 7946 0958 or 030 12345678; 12 High Street, 10115 Berlin; "
    "card 4111 1111 1111 1111, SSN 123-45-6789, from 192.0.2.7, dana@acme.io"
)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class BodyError(ValueError):
    """The body cannot be masked as the kind it claims to be (not JSON, a broken line...)."""


@dataclass
class _CompiledRule:
    rule: MaskRule
    expr: CompiledPath = field(repr=False)


class Masker:
    """The masking of one scope, compiled once and reused for every document."""

    def __init__(self, scope: ScopeConfig, hash_key: bytes | None) -> None:
        self.scope = scope
        self._hash_key = hash_key
        self._bodies = MaskedBodies()
        self._allow = (
            None if scope.fields.allow == "all" else [compile_path(p) for p in scope.fields.allow]
        )
        self._rules = [_CompiledRule(r, compile_path(r.path)) for r in scope.masks]
        if hash_key is None and any(r.action == "hash" for r in scope.masks):
            raise ValueError("hash masks need a hash key")
        enabled = scope.detectors.enabled()
        self._text = TextMasker(
            for_scope(enabled, scope.detectors.phone_regions),
            {name: scope.detectors.action_for(name) for name in enabled},
            hash_key,
        )

    def warm_up(self) -> None:
        """Load what detectors read on first use (name dictionaries, phone metadata), so the
        first flow does not wait for it."""
        self._text.mask({"text": WARM_UP_TEXT}, MaskReport())

    # -- documents -------------------------------------------------------------------

    @functools.cached_property
    def _envelope(self) -> TextMasker:
        return self._text.redacting_only()

    def mask_envelope(self, document: Any, report: MaskReport) -> Any:
        """Only the detectors, redacting: for what surrounds the trace documents of an answer
        (paging metadata, warnings, error messages), which keeps its shape."""
        with _gc_paused():
            return self._envelope.mask(document, report)

    def mask_document(self, document: Any, report: MaskReport) -> Any:
        # The walk allocates many small objects while the whole document is alive; the cyclic
        # GC would re-traverse that graph again and again (it creates no cycles of its own).
        with _gc_paused():
            return self._mask_document(document, report)

    def _mask_document(self, document: Any, report: MaskReport) -> Any:
        if self._allow is not None:
            document = self._apply_allow_list(document, report)
        for compiled in self._rules:
            document = self._apply_rule(document, compiled, report)
        return self._text.mask(document, report)

    def _apply_allow_list(self, document: Any, report: MaskReport) -> Any:
        trie: dict[Any, Any] = {}
        for expr in self._allow or ():
            for path in expr.paths(document):
                node = trie
                for part in path[:-1]:
                    nxt = node.get(part)
                    if nxt is _KEEP_ALL:
                        break
                    node = node.setdefault(part, {})
                else:
                    if path:
                        node[path[-1]] = _KEEP_ALL
                    else:
                        return document
        return _prune(document, trie, report)

    def _apply_rule(self, document: Any, compiled: _CompiledRule, report: MaskReport) -> Any:
        rule = compiled.rule
        paths = list(compiled.expr.paths(document))
        if not paths:
            return document
        if rule.action == "drop":
            # Remove deepest and highest indices first so earlier removals don't shift later ones.
            for path in sorted(paths, key=lambda p: (len(p), p[-1] if p else 0), reverse=True):
                if path and _remove(document, path):
                    report.add(rule.id, "drop", path)
            return document
        for path in paths:
            if not path:
                document = self._masked_value(document, rule)
            else:
                parent = _get(document, path[:-1])
                parent[path[-1]] = self._masked_value(parent[path[-1]], rule)
            report.add(rule.id, rule.action, path)
        return document

    def _masked_value(self, value: Any, rule: MaskRule) -> Any:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        if rule.action == "redact":
            return f"[REDACTED:{rule.id}]"
        if rule.action == "hash":
            assert self._hash_key is not None
            digest = hmac.new(self._hash_key, text.encode(), hashlib.sha256).hexdigest()
            return f"hmac:{digest[:24]}"
        # partial: keep the last N characters, hide the rest (and its length).
        return "****" + (text[-rule.keep :] if rule.keep else "")

    # -- bodies ----------------------------------------------------------------------

    def _guarded(self, document: Any, report: MaskReport) -> Any:
        try:
            return self.mask_document(document, report)
        except (DocumentTooDeep, RecursionError) as exc:
            raise BodyError(f"cannot mask: {exc or 'nested too deeply'}") from None

    def mask_json(self, body: bytes, report: MaskReport, indent: int | None = None) -> bytes:
        try:
            document, fast = codec.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BodyError(f"body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BodyError("body is JSON nested too deeply to mask") from None
        masked = self._guarded(document, report)
        del document
        report.documents += 1
        return _encoded(masked, fast, indent) + (b"\n" if indent is not None else b"")

    def mask_jsonl(self, body: bytes, report: MaskReport) -> bytes:
        out: list[bytes] = []
        for number, line in enumerate(body.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                document, fast = codec.loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                raise BodyError(f"line {number} is not valid JSON: {exc}") from None
            except RecursionError:
                raise BodyError(f"line {number} is JSON nested too deeply to mask") from None
            masked = self._guarded(document, report)
            report.documents += 1
            out.append(_encoded(masked, fast))
        return b"\n".join(out) + (b"\n" if out else b"")

    def mask_body(
        self,
        body: bytes,
        kind: str,
        report: MaskReport,
        indent: int | None = None,
        digest: str | None = None,
    ) -> bytes:
        """The masked body; `indent` pretty-prints JSON (for people reading `tracegate mask`);
        `digest` is the body's SHA-256 hex when the caller has computed it."""
        if kind not in ("json", "jsonl"):
            raise BodyError(f"cannot mask content of kind {kind!r}")
        key = self._bodies.key(body, kind, indent, digest)
        if key is not None:
            masked = self._bodies.get(key, report)
            if masked is not None:
                return masked
        own = MaskReport()
        with _gc_paused():  # parsing, masking and serialising all allocate the whole graph
            if kind == "json":
                masked = self.mask_json(body, own, indent)
            else:
                masked = self.mask_jsonl(body, own)
        if key is not None:
            self._bodies.put(key, masked, own)
        report.merge(own)
        return masked


def _encoded(document: Any, fast: bool, indent: int | None = None) -> bytes:
    try:
        return codec.dumps(document, fast, indent)
    except UnicodeEncodeError:  # "\ud800" escapes read as text: no UTF-8 can carry them
        raise BodyError("cannot mask: the body escapes a lone surrogate (not text)") from None


def _get(document: Any, path: Path) -> Any:
    for part in path:
        document = document[part]
    return document


def _remove(document: Any, path: Path) -> bool:
    try:
        parent = _get(document, path[:-1])
        del parent[path[-1]]
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _prune(node: Any, trie: Any, report: MaskReport, path: Path = ()) -> Any:
    if trie is _KEEP_ALL:
        return node
    if isinstance(node, dict):
        kept = {}
        for key, value in node.items():
            if key in trie:
                kept[key] = _prune(value, trie[key], report, (*path, key))
            else:
                report.add("fields.allow", "drop", (*path, key))
        return kept
    if isinstance(node, list):
        kept_items = []
        for index, value in enumerate(node):
            if index in trie:
                kept_items.append(_prune(value, trie[index], report, (*path, index)))
            else:
                report.add("fields.allow", "drop", (*path, index))
        return kept_items
    return node
