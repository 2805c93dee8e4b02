"""Detector-driven masking of every string value in a document, JSON-in-strings included.

A document is walked once to collect its string values (and the strings inside string values
that hold JSON, parsed and walked in turn); all of them go through one `Scanner.scan`; the
findings are applied per string; strings that held JSON are re-encoded only if something inside
them changed, so they stay valid JSON and untouched ones keep their exact text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tracegate.detectors.base import Detector
from tracegate.detectors.scanner import Finding, Scanner
from tracegate.detectors.secrets import is_assigned_secret, is_secret_key_name
from tracegate.masking.paths import Path
from tracegate.masking.report import MaskReport

MAX_JSON_DEPTH = 3
GROUP_PRIORITY = {"secrets": 0, "pii": 1}


@dataclass
class _Slot:
    parent: Any  # dict or list holding the string (None: the string is the whole document)
    key: Any
    text: str
    path: Path
    owner: int  # which document it belongs to: 0 is the top level, others are embedded JSON


@dataclass
class _Embedded:
    """A string value that held JSON: parsed, masked in place, re-encoded when changed."""

    slot: _Slot
    document: Any
    compact: bool
    changed: bool = False


@dataclass
class _Collected:
    slots: list[_Slot] = field(default_factory=list)
    embedded: list[_Embedded] = field(default_factory=list)


class TextMasker:
    """Applies one scope's detector policy: which detectors run and the action for each."""

    def __init__(
        self, detectors: list[Detector], actions: Mapping[str, str], hash_key: bytes | None
    ) -> None:
        self.scanner = Scanner(detectors)
        self.actions = dict(actions)
        # Values under keys like "password" or "api_key" are judged whole, by the key.
        self._keyed = next((d for d in detectors if d.name == "secret_assignment"), None)
        self._hash_key = hash_key
        if hash_key is None and "hash" in self.actions.values():
            raise ValueError("hash actions need a hash key")

    def mask(self, document: Any, report: MaskReport) -> Any:
        collected = _Collected()
        root = [document]  # a holder, so a top-level string can be replaced like any other
        _collect(root, 0, document, (), 0, 0, collected)
        findings = self.scanner.scan([slot.text for slot in collected.slots])
        if self._keyed is not None:
            findings.extend(_keyed_secrets(collected.slots, self._keyed))
        if not findings:
            return document
        by_slot: dict[int, list[Finding]] = {}
        for finding in findings:
            by_slot.setdefault(finding.text_index, []).append(finding)
        drops: list[_Slot] = []
        for index, slot_findings in by_slot.items():
            slot = collected.slots[index]
            new_text, dropped = self._apply(slot, _non_overlapping(slot_findings), report)
            if dropped:
                drops.append(slot)
            elif new_text != slot.text:
                slot.parent[slot.key] = new_text
            else:
                continue
            if slot.owner:
                collected.embedded[slot.owner - 1].changed = True
        _remove(drops)
        # Innermost first: re-encoding an embedded document may change its container's text.
        for embedded in reversed(collected.embedded):
            if embedded.changed:
                separators = (",", ":") if embedded.compact else (", ", ": ")
                slot = embedded.slot
                slot.parent[slot.key] = json.dumps(
                    embedded.document, ensure_ascii=False, separators=separators
                )
                if slot.owner:
                    collected.embedded[slot.owner - 1].changed = True
        return root[0]

    def _apply(self, slot: _Slot, findings: list[Finding], report: MaskReport) -> tuple[str, bool]:
        pieces: list[str] = []
        cursor = 0
        for finding in findings:
            detector = finding.detector
            action = self.actions.get(detector.name, "redact")
            report.add(f"detect.{detector.name}", action, slot.path)
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


def _collect(
    parent: Any, key: Any, node: Any, path: Path, owner: int, depth: int, out: _Collected
) -> None:
    """Gather every string value, descending into strings that hold a JSON object or array."""
    stack = [(parent, key, node, path)]
    while stack:
        parent, key, node, path = stack.pop()
        if isinstance(node, str):
            slot = _Slot(parent, key, node, path, owner)
            stripped = node.strip()
            if (
                depth < MAX_JSON_DEPTH
                and len(stripped) > 1
                and stripped[0] in "{["
                and stripped[-1] in "}]"
            ):
                try:
                    inner = json.loads(stripped)
                except ValueError:
                    inner = None
                if isinstance(inner, dict | list):
                    out.embedded.append(
                        _Embedded(slot, inner, compact=", " not in node and ": " not in node)
                    )
                    _collect(
                        [inner], 0, inner, (*path, "<json>"), len(out.embedded), depth + 1, out
                    )
                    continue
            out.slots.append(slot)
        elif isinstance(node, dict):  # pushed reversed, so strings come in document order
            stack.extend(reversed([(node, k, v, (*path, k)) for k, v in node.items()]))
        elif isinstance(node, list):
            stack.extend(reversed([(node, i, v, (*path, i)) for i, v in enumerate(node)]))


def _keyed_secrets(slots: list[_Slot], detector: Detector) -> list[Finding]:
    return [
        Finding(index, 0, len(slot.text), detector)
        for index, slot in enumerate(slots)
        if isinstance(slot.key, str)
        and is_secret_key_name(slot.key)
        and is_assigned_secret(slot.text)
    ]


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
