"""Checks that tell a secret from a look-alike: placeholders, words, identifiers.

Shared by the generic credential finders (`secrets.py`) and the provider rules (`rules.py`).
"""

from __future__ import annotations

import re

PLACEHOLDERS = re.compile(
    r"^(?:<[^>]*>|\$\{[^}]*\}|\$[A-Z_][A-Z0-9_]*|\{\{[^}]*\}\}|%[A-Z_]+%|\*+|x+|X+|\.+|"
    r"(?:your|my|the)[-_ ]?\w*|changeme|change[-_]me|example\w*|redacted|\[REDACTED[^\]]*\]|"
    r"null|none|true|false|undefined|password|secret|token|dummy|placeholder|test|xxx+)$",
    re.IGNORECASE,
)
HEX_OR_UUID = re.compile(
    r"^(?:[0-9a-f]{7,64}|[0-9A-F]{7,64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
# Word-shaped values ("Bearer", "basic", "NONE", "read_only") are settings, not secrets.
WORDS = re.compile(r"[A-Z]?[a-z]+(?:[ _-][A-Za-z]?[a-z]+)*|[A-Z]+(?:[ _-][A-Z]+)*")


def not_placeholder(value: str) -> bool:
    return not PLACEHOLDERS.match(value.strip("'\""))


def is_assigned_secret(value: str) -> bool:
    """A value assigned to a credential name that is worth hiding: not a placeholder, a word,
    a number or an identifier such as a digest."""
    value = value.strip("'\"")
    if len(value) < 6 or not not_placeholder(value) or value.isdigit():
        return False
    if HEX_OR_UUID.match(value) and len(value) in (7, 8, 12, 32, 36, 40, 64):
        return False  # git SHAs, UUIDs and digests are identifiers, not secrets
    return not WORDS.fullmatch(value)


def valid_aws_key_id(value: str) -> bool:
    body = value[4:]
    return not (value.endswith("EXAMPLE") or re.fullmatch(r"X+", body) or len(set(body)) < 6)
