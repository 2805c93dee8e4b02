"""Detector-driven masking of every string value in a document, JSON-in-strings included.

A document is walked once to collect its string values; all of them go through one
`Scanner.scan`; the findings are applied per string. Strings that look like JSON (tool-call
arguments, tool results) are parsed and their strings collected; long ones (PROBE_FROM and
over) are first *probed*: their text, with JSON's backslash escapes undone, goes through the
anchors (and the credential key names), and only those with a hit are parsed, so a large
embedded document with nothing in it costs one anchor scan and no parse. Parsed ones are
re-encoded only if something inside them changed, so they stay valid JSON and untouched ones
keep their exact text. The probe is a superset: every value inside the embedded document
appears, exactly as parsed, in its unescaped text.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tracegate.budget import check as check_budget
from tracegate.detectors.base import Detector
from tracegate.detectors.scanner import Finding, Scanner
from tracegate.detectors.secrets import SECRET_KEY_NAMES, SECRET_KEY_WORDS, is_secret_key_name
from tracegate.masking import codec
from tracegate.masking.paths import Path
from tracegate.masking.report import MaskReport

MAX_JSON_DEPTH = 3
MAX_NESTING = 256  # containers inside containers; deeper is refused (or, in a string, text)
# The shortest value any detector reports ("a@b.io", "1.1.1.1", a 6-character password).
MIN_TEXT = 6
# JSON-looking strings shorter than this are parsed at once, not probed first: in real traces
# nearly every tool result holds a digit run or a capitalised pair, so the probe would only
# add a scan before the parse (`scripts/bench/masking.py`); long ones are still probed.
PROBE_FROM = 4096
# Strings collected before a batch is scanned and applied (bounds the bookkeeping in memory).
BATCH_STRINGS = 256
GROUP_PRIORITY = {"secrets": 0, "pii": 1}
# Anything `is_secret_key_name` accepts contains one of these: an embedded document holding
# such a key must be parsed, since its value is judged by the key, not by an anchor.
KEY_NAME_PROBE = "|".join(
    sorted({*SECRET_KEY_WORDS, *(n.replace("_", "[_.-]") for n in SECRET_KEY_NAMES)})
)
# Keys that are plain identifiers (snake, camel or dotted words) hold nothing to find.
_PLAIN_KEY = re.compile(r"[a-z][a-z0-9]*(?:[._-]?[a-zA-Z][a-z0-9]*)*")


def _long_integer(value: int | Decimal) -> bool:
    if type(value) is Decimal and (not value.is_finite() or value != value.to_integral_value()):
        return False
    return value >= 1_000_000 or value <= -1_000_000


def _digits(value: int | Decimal) -> str:
    return str(int(value))


@functools.lru_cache(maxsize=65536)
def _readable_key(key: str) -> bool:
    """A key that is not a plain identifier, so it may hold a value (keys repeat: cached)."""
    return not _PLAIN_KEY.fullmatch(key)


_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9A-Fa-f]{4})')
_UNESCAPED = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class DocumentTooDeep(ValueError):
    """A document nested deeper than MAX_NESTING."""


@dataclass(slots=True)
class _Slot:
    parent: Any  # dict or list holding the string (None: the string is the whole document)
    key: Any
    text: str
    path: Path  # of the container holding it
    owner: int  # which document it belongs to: 0 is the top level, others are embedded JSON
    exact: Path | None = None  # the string's own path, when it was not added by its container
    codec: str | None = None  # "base64": the value is stored encoded (OTLP bytesValue)

    def full_path(self) -> Path:
        return self.exact if self.exact is not None else (*self.path, self.key)


@dataclass
class _Embedded:
    """A string value that held JSON: parsed, masked in place, re-encoded when changed."""

    slot: _Slot
    document: Any
    compact: bool
    fast: bool  # read by orjson (codec.loads), so it may write it back
    changed: bool = False


@dataclass
class _Collected:
    # Raw slots as tuples in _Slot's field order: cheaper to make than objects, and only the
    # few strings with findings ever become a _Slot.
    slots: list[tuple[Any, ...]] = field(default_factory=list)
    embedded: list[_Embedded] = field(default_factory=list)
    # Strings that look like JSON, to probe before parsing: (parent, key, text, path, owner,
    # depth), with `path` the string's own path.
    probes: list[tuple[Any, ...]] = field(default_factory=list)


class TextMasker:
    """Applies one scope's detector policy: which detectors run and the action for each."""

    def __init__(
        self, detectors: list[Detector], actions: Mapping[str, str], hash_key: bytes | None
    ) -> None:
        self.scanner = Scanner(detectors, probe_patterns=[KEY_NAME_PROBE])
        self.actions = dict(actions)
        # Values under keys like "password", "phone" or "ssn" are judged whole, by the key;
        # some detectors ignore strings under id-like keys ("order_id" holds no phone).
        self._keyed = [d for d in detectors if d.key_policy is not None]
        self._key_rules: dict[str, tuple[tuple[Detector, ...], frozenset[str]]] = {}
        self._wholes: dict[tuple[str, str], bool] = {}
        self._hash_key = hash_key
        if hash_key is None and "hash" in self.actions.values():
            raise ValueError("hash actions need a hash key")

    def redacting_only(self) -> TextMasker:
        """The same detectors and compiled scanner, every action `redact`: for text around
        documents, where a `drop` would move what is put back afterwards."""
        twin = copy.copy(self)
        twin.actions = dict.fromkeys(self.actions, "redact")
        return twin

    def mask(self, document: Any, report: MaskReport) -> Any:
        """Mask in batches of whole sub-documents (each trace of a list, each top-level key),
        so the bookkeeping for one batch is freed before the next: memory stays near the size
        of the parsed document however large it is, and each batch is still one scan."""
        root = [document]  # a holder, so a top-level string can be replaced like any other
        batch = _Collected()
        memo: dict[str, Any] = {}  # findings per distinct string, across the batches
        for parent, key, path in _units(root):
            _collect(parent, key, parent[key], path, 0, 0, batch)
            if len(batch.slots) + len(batch.probes) >= BATCH_STRINGS:
                self._finish(batch, report, memo)
                batch = _Collected()
        if type(document) is dict:  # top-level keys last: renaming them moves no other slot
            for key in list(document):
                if type(key) is str and len(key) >= MIN_TEXT and _readable_key(key):
                    batch.slots.append((document, key, key, (), 0, ("<key>",), "key"))
        self._finish(batch, report, memo)
        return root[0]

    def _finish(self, collected: _Collected, report: MaskReport, memo: dict[str, Any]) -> None:
        check_budget()
        self._open_probed(collected)
        findings = self.scanner.scan([raw[2] for raw in collected.slots], memo)
        if self._keyed:
            findings = self._by_key(collected.slots, findings)
        if not findings:
            return
        by_slot: dict[int, list[Finding]] = {}
        for finding in findings:
            by_slot.setdefault(finding.text_index, []).append(finding)
        drops: list[_Slot] = []
        renames: list[tuple[_Slot, str]] = []
        for index, slot_findings in by_slot.items():
            slot = _Slot(*collected.slots[index])
            new_text, dropped = self._apply(slot, _non_overlapping(slot_findings), report)
            if dropped:
                drops.append(slot)
            elif new_text == slot.text:
                continue
            elif slot.codec == "key":
                renames.append((slot, new_text))  # after the values, which name the old key
            else:  # a masked number becomes a string
                slot.parent[slot.key] = _encode(new_text, slot.codec)
            if slot.owner:
                collected.embedded[slot.owner - 1].changed = True
        _remove(drops)
        _rename(renames)
        # Innermost first: re-encoding an embedded document may change its container's text.
        for embedded in reversed(collected.embedded):
            if embedded.changed:
                slot = embedded.slot
                if embedded.compact:
                    text = codec.dumps(embedded.document, embedded.fast).decode()
                else:
                    spaced = (", ", ": ")
                    text = json.dumps(embedded.document, ensure_ascii=False, separators=spaced)
                slot.parent[slot.key] = text
                if slot.owner:
                    collected.embedded[slot.owner - 1].changed = True

    def _rules_for(self, key: str) -> tuple[tuple[Detector, ...], frozenset[str]]:
        rules = self._key_rules.get(key)
        if rules is None:
            policies = [(d, d.key_policy(key)) for d in self._keyed]
            rules = (
                tuple(d for d, p in policies if p == "whole"),
                frozenset(d.name for d, p in policies if p == "skip"),
            )
            if len(self._key_rules) < 65536:
                self._key_rules[key] = rules
        return rules

    def _whole(self, detector: Detector, text: str) -> bool:
        """A detector's judgement of a whole value, remembered (the same fields come back)."""
        key = (detector.name, text)
        known = self._wholes.get(key)
        if known is None:
            known = bool(detector.whole(text))
            if len(self._wholes) >= 65536:
                self._wholes = {}
            if len(text) <= 4096:
                self._wholes[key] = known
        return known

    def _by_key(self, slots: list[tuple[Any, ...]], findings: list[Finding]) -> list[Finding]:
        """Apply what field names say: whole values under named keys, ignored under id keys."""
        extra: list[Finding] = []
        skipped: set[tuple[int, str]] = set()
        for index, raw in enumerate(slots):
            key = raw[1]
            if type(key) is not str:
                continue
            whole, skip = self._rules_for(key)
            for detector in whole:
                if self._whole(detector, raw[2]):
                    extra.append(Finding(index, 0, len(raw[2]), detector))
            skipped.update((index, name) for name in skip)
        if skipped:
            findings = [f for f in findings if (f.text_index, f.detector.name) not in skipped]
        return findings + extra

    def _open_probed(self, collected: _Collected) -> None:
        """Parse (and collect from) the JSON-looking strings in which a probe hit, level by
        level: documents found inside those are probed in the next round."""
        while collected.probes:
            probes, collected.probes = collected.probes, []
            # The raw text first (most embedded documents that hold anything show it there);
            # only the rest is probed again with JSON's escapes undone.
            hit = self.scanner.probe([probe[2] for probe in probes])
            rest = [i for i in range(len(probes)) if i not in hit and "\\" in probes[i][2]]
            if rest:
                unescaped = [_ESCAPE.sub(_unescape, probes[i][2]) for i in rest]
                hit |= {rest[i] for i in self.scanner.probe(unescaped)}
                del unescaped
            for index in sorted(hit):
                parent, key, text, path, owner, depth = probes[index]
                _add_string(parent, key, text, path, owner, depth, collected)

    def _apply(self, slot: _Slot, findings: list[Finding], report: MaskReport) -> tuple[str, bool]:
        pieces: list[str] = []
        cursor = 0
        for finding in findings:
            detector = finding.detector
            action = self.actions.get(detector.name, "redact")
            report.add(f"detect.{detector.name}", action, slot.full_path())
            if action == "drop":
                return slot.text, True
            pieces.append(slot.text[cursor : finding.start])
            pieces.append(
                self._replacement(slot.text[finding.start : finding.end], detector, action)
            )
            cursor = finding.end
        pieces.append(slot.text[cursor:])
        return "".join(pieces), False

    def _replacement(self, value: str, detector: Detector, action: str) -> str:
        if action == "hash":
            assert self._hash_key is not None
            digest = hmac.new(self._hash_key, value.encode(), hashlib.sha256).hexdigest()
            return f"[{detector.label}:{digest[:16]}]"
        if action == "partial":
            if detector.name == "email":
                return "****@" + value.rpartition("@")[2]
            return "****" + (value[-detector.keep :] if detector.keep else "")
        return f"[REDACTED:{detector.label}]"


def _units(root: list[Any]) -> Iterator[tuple[Any, Any, Path]]:
    """(container, key, path) of the pieces masked one after another: the items of a list of
    documents, each top-level key of an object (and the items of a list under it). A drop can
    only remove a string, so items are split out only when they are all containers (their
    indices then never shift)."""
    document = root[0]
    if type(document) is list and _all_containers(document):
        for index in range(len(document)):
            yield document, index, (index,)
    elif type(document) is dict:
        for key in list(document):  # a drop may remove a top-level string key meanwhile
            value = document.get(key)
            if type(value) is list and value and _all_containers(value):
                for index in range(len(value)):
                    yield value, index, (key, index)
            elif key in document:
                yield document, key, (key,)
    else:
        yield root, 0, ()


def _all_containers(items: list[Any]) -> bool:
    return all(type(item) is dict or type(item) is list for item in items)


def _collect(
    parent: Any, key: Any, node: Any, path: Path, owner: int, depth: int, out: _Collected
) -> None:
    """Gather every string value, descending into strings that hold a JSON object or array.

    This walk touches every node of every trace, so it stays lean: a slot is a tuple naming its
    container and key, and paths are tuples built per container, not per string.
    """
    if isinstance(node, str):
        _add_string(parent, key, node, path, owner, depth, out)
    elif (type(node) is int or type(node) is Decimal) and _long_integer(node):
        out.slots.append((parent, key, _digits(node), (), owner, (*path, "<number>"), "number"))
    elif node and (type(node) is dict or type(node) is list):
        _walk(node, path, owner, depth, out, out.slots.append)


def _walk(container: Any, path: Path, owner: int, depth: int, out: _Collected, append: Any) -> None:
    if len(path) > MAX_NESTING:
        raise DocumentTooDeep(f"JSON nested deeper than {MAX_NESTING} levels")
    is_dict = type(container) is dict
    items = container.items() if is_dict else enumerate(container)
    for k, value in items:
        kind = type(value)
        if is_dict and type(k) is str and len(k) >= MIN_TEXT and _readable_key(k):
            # An object key can carry a value too ({"dana@acme.io": ...}): read like a value.
            # Its report path names where it is, never the key itself.
            append((container, k, k, path, owner, (*path, "<key>"), "key"))
        if (kind is int or kind is Decimal) and _long_integer(value):
            # Long numbers can be card, phone or account numbers stored as JSON numbers
            # (DynamoDB's N arrives as Decimal).
            append((container, k, _digits(value), path, owner, (*path, k, "<number>"), "number"))
            continue
        if kind is str:
            if len(value) < MIN_TEXT:
                continue  # too short for any detector (or a credential) to match
            if k == "bytesValue":  # OTLP bytes attributes: base64 by definition
                decoded = _base64_text(value)
                if decoded is not None:
                    append((container, k, decoded, path, owner, None, "base64"))
                continue
            first = value[0]
            if (
                first == "{"
                or first == "["
                or (first.isspace() and value.lstrip()[:1] in ("{", "["))
            ):
                if (
                    depth >= MAX_JSON_DEPTH
                    or len(value) < PROBE_FROM
                    or (type(k) is str and is_secret_key_name(k))
                ):
                    _add_string(container, k, value, (*path, k), owner, depth, out)
                else:
                    out.probes.append((container, k, value, (*path, k), owner, depth))
            else:
                append((container, k, value, path, owner, None, None))
        elif (kind is dict or kind is list) and value:
            _walk(value, (*path, k), owner, depth, out, append)


def _add_string(
    parent: Any, key: Any, text: str, path: Path, owner: int, depth: int, out: _Collected
) -> None:
    stripped = text.strip()
    if depth < MAX_JSON_DEPTH and len(stripped) > 1 and stripped[-1] in "}]":
        try:
            inner, fast = codec.loads(stripped)
        except (ValueError, RecursionError):
            inner, fast = None, False
        if isinstance(inner, dict | list):
            compact = ", " not in text and ": " not in text
            slot = _Slot(parent, key, text, (), owner, exact=path)
            mark = (len(out.slots), len(out.embedded), len(out.probes))
            out.embedded.append(_Embedded(slot, inner, compact, fast))
            try:
                _collect([inner], 0, inner, (*path, "<json>"), len(out.embedded), depth + 1, out)
                return
            except DocumentTooDeep:  # over-deep JSON inside a string is read as text
                del out.slots[mark[0] :], out.embedded[mark[1] :], out.probes[mark[2] :]
    out.slots.append((parent, key, text, (), owner, path, None))


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    return chr(int(code[1:], 16)) if len(code) == 5 else _UNESCAPED[code]


def _base64_text(value: str) -> str | None:
    """The UTF-8 text a base64 value holds, or None for binary or invalid data."""
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return text if text.replace("\n", "").replace("\t", "").isprintable() else None


def _rename(renames: list[tuple[_Slot, str]]) -> None:
    """Masked object keys: each entry keeps its place, under the masked name."""
    by_container: dict[int, tuple[dict, dict[str, str]]] = {}
    for slot, new_key in renames:
        if isinstance(slot.parent, dict) and slot.key in slot.parent:
            by_container.setdefault(id(slot.parent), (slot.parent, {}))[1][slot.key] = new_key
    for container, names in by_container.values():
        items = list(container.items())
        container.clear()
        for key, value in items:
            new = names.get(key, key)
            while new in container:  # two keys masked to the same label stay distinct
                new += "'"
            container[new] = value


def _encode(text: str, codec: str | None) -> str:
    return base64.b64encode(text.encode()).decode() if codec == "base64" else text


def _non_overlapping(findings: list[Finding]) -> list[Finding]:
    """Secrets win over personal data, longer over shorter; the rest is dropped."""
    ranked = sorted(
        findings,
        key=lambda f: (GROUP_PRIORITY.get(f.detector.group, 9), -(f.end - f.start), f.start),
    )
    chosen: list[Finding] = []
    for finding in ranked:
        if all(finding.end <= c.start or finding.start >= c.end for c in chosen):
            chosen.append(finding)
    return sorted(chosen, key=lambda f: f.start)


def _remove(drops: list[_Slot]) -> None:
    """Drop whole fields; list items from the highest index down so indices stay valid."""
    for slot in sorted(drops, key=lambda s: s.key if isinstance(s.key, int) else -1, reverse=True):
        if isinstance(slot.parent, dict):
            slot.parent.pop(slot.key, None)
        elif isinstance(slot.parent, list) and slot.key < len(slot.parent):
            del slot.parent[slot.key]
