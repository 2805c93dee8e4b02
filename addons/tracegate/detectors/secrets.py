"""Credentials: provider token formats (data, in `rules/`) and the generic shapes around them.

Provider formats are rules with examples, loaded by `tracegate.detectors.rules`. What is here
is what no prefix identifies: assignments (`password=...`, `DB_PASSWORD=...`), passwords named
in prose, basic auth in URLs and commands, PEM keys, JWTs, and long random values next to a
credential word.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterator

from tracegate.detectors.base import Detector, Span, shannon_entropy
from tracegate.detectors.rules import provider_rules, to_detector
from tracegate.detectors.validators import (
    HEX_OR_UUID,
    is_assigned_secret,
    not_placeholder,
)

# Values that documentation uses in place of a real secret.
KEYWORDS = (
    r"password|passwd|pwd|passphrase|pass|secret|client[_-]?secret|api[_-]?key|apikey|"
    r"access[_-]?key|auth[_-]?token|access[_-]?token|refresh[_-]?token|bearer|token|credential|"
    r"private[_-]?key"
)
TRAILING = ".,;:)]}>"


def _jwt(value: str) -> bool:
    header = value.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


SECRET_KEY_WORDS = {"password", "passwd", "pwd", "passphrase", "secret", "token", "apikey"}
SECRET_KEY_NAMES = {
    "api_key", "access_key", "private_key", "client_secret", "auth_token", "access_token",
    "refresh_token", "secret_key", "secret_access_key", "session_token", "credentials",
}  # fmt: skip


@functools.lru_cache(maxsize=4096)
def is_secret_key_name(key: str) -> bool:
    """A JSON key that names a credential: its string value is judged as a whole."""
    lowered = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    lowered = lowered.replace("-", "_").replace(".", "_")
    if any(lowered.endswith(name) for name in SECRET_KEY_NAMES):
        return True
    return bool(SECRET_KEY_WORDS & set(lowered.split("_")))


def _high_entropy(value: str) -> bool:
    return (
        len(value) >= 20
        and not HEX_OR_UUID.match(value)
        and shannon_entropy(value) >= 3.5
        and bool(re.search(r"\d", value))
        and bool(re.search(r"[A-Za-z]", value))
    )


def _strip_trailing(text: str, start: int, end: int) -> Span:
    while end > start and text[end - 1] in TRAILING:
        end -= 1
    return start, end


def _valued(pattern: re.Pattern[str], check) -> callable:
    """A finder for patterns whose `value` group may swallow trailing punctuation."""

    def find(text: str) -> Iterator[Span]:
        for match in pattern.finditer(text):
            if not not_placeholder(match.group("value")):
                continue
            start, end = _strip_trailing(text, *match.span("value"))
            if end - start >= 4 and check(text[start:end]):
                yield start, end

    return find


# `DB_PASSWORD=`, `--password=`, `"apiKey": "`, `client_secret: ...`: the keyword may close a
# longer name (A_B_PASSWORD) and the value runs to whitespace or a quote.
ASSIGNMENT = re.compile(
    rf"(?i)(?<![A-Za-z0-9])[A-Za-z0-9_.-]{{0,40}}?(?:{KEYWORDS})[A-Za-z0-9_]{{0,40}}['\"]?"
    r"\s{0,8}(?::|=|=>)\s{0,8}"
    r"(?:['\"](?P<quoted>[^'\"\n]{4,200})['\"]|(?P<value>[^\s'\",;{}()\[\]]{4,200}))"
)


def _assignments(text: str) -> Iterator[Span]:
    for match in ASSIGNMENT.finditer(text):
        group = "quoted" if match.group("quoted") is not None else "value"
        start, end = match.span(group)
        if not not_placeholder(match.group(group)):
            continue
        if group == "value":
            start, end = _strip_trailing(text, start, end)
        if is_assigned_secret(text[start:end]):
            yield start, end


PROSE_PASSWORD = re.compile(
    r"(?i)\b(?:password|passwd|passphrase|passcode|pwd)\b(?:\s+(?:for\s+\S+\s+)?(?:is|was|of))?"
    r"(?:\s*[:=]\s*|\s+)[\"'\u201c\u2018`]?(?P<value>[^\s\"'\u201d\u2019`]{6,128})"
)


def _prose_value(value: str) -> bool:
    """A password named in prose: not a word ("is correct"), so it has a digit or a symbol."""
    return (
        is_assigned_secret(value)
        and not value.isalpha()
        and bool(re.search(r"[\d\W_]", value))
        and not re.fullmatch(r"[\d.:/-]+", value)
    )


# userinfo is the text before the last `@` of the authority (RFC 3986), so passwords may hold
# `.`, `_`, `!`, `$`, `:`... and even `@` when the client did not percent-encode it.
URL_USERINFO = re.compile(
    r"\b[a-z][a-z0-9+.-]{1,20}://(?P<user>[^\s:/?#@]{1,64}):(?P<value>[^\s/]{1,128})@"
    r"(?P<host>[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])",
    re.IGNORECASE,
)


def _url_passwords(text: str) -> Iterator[Span]:
    for match in URL_USERINFO.finditer(text):
        value = match.group("value")
        if not_placeholder(value) and value.lower() not in ("pass", "pwd", "passwd"):
            yield match.span("value")


BASIC_AUTH = re.compile(
    r"(?:(?<![\w-])(?:-u|--user|--proxy-user)\s*=?\s*|\b(?:log(?:ged)?\s?in|sign(?:ed)?\s?in|"
    r"credentials?|creds|basic auth|auth)\b(?:\s+(?:as|with|is|are|:))?\s+)"
    r"[\"']?[^\s:\"'@/]{1,64}:(?P<value>[^\s\"']{4,128})",
    re.IGNORECASE,
)
AUTH_HEADER = re.compile(r"(?i)\bbasic\s+(?P<value>[A-Za-z0-9+/]{8,}={0,2})(?![A-Za-z0-9+/=])")


def _basic_header(value: str) -> bool:
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


GENERIC: list[Detector] = [
    Detector(
        "jwt",
        "secrets",
        anchor=r"eyJ[A-Za-z0-9_-]{5,}\.eyJ",
        pattern=re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}"),
        validate=_jwt,
    ),
    Detector(
        "private_key",
        "secrets",
        anchor=r"-----BEGIN [A-Z ]*PRIVATE KEY|PuTTY-User-Key-File",
        pattern=re.compile(
            r"-----BEGIN ([A-Z ]*)PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END \1PRIVATE KEY(?: BLOCK)?-----|\Z)"
            r"|PuTTY-User-Key-File-\d: .*?(?:Private-MAC: [0-9a-f]+|\Z)",
            re.S,
        ),
    ),
    Detector(
        "url_password",
        "secrets",
        anchor=r"://[^\s:/@]+:[^\s/]+@",
        finder=_url_passwords,
    ),
    Detector(
        "basic_auth",
        "secrets",
        anchor=r"(?:-u|--user|log\s?in|sign\s?in|cred|auth)[^\n]{0,20}:[^\s]{4}|basic\s+[A-Za-z0-9+/]{8}",
        caseless=True,
        finder=lambda text: _chain(
            _valued(BASIC_AUTH, is_assigned_secret)(text),
            (m.span("value") for m in AUTH_HEADER.finditer(text) if _basic_header(m["value"])),
        ),
    ),
    Detector(
        "secret_assignment",
        "secrets",
        anchor=rf"(?:{KEYWORDS})[A-Za-z0-9_]*['\"]?\s*(?::|=)",
        caseless=True,
        finder=_assignments,
        whole=is_assigned_secret,
        key_policy=lambda key: "whole" if is_secret_key_name(key) else None,
    ),
    Detector(
        "prose_password",
        "secrets",
        anchor=r"(?:password|passwd|passphrase|passcode|pwd)\W",
        caseless=True,
        finder=_valued(PROSE_PASSWORD, _prose_value),
    ),
    Detector(
        "high_entropy_secret",
        "secrets",
        anchor=rf"(?:{KEYWORDS}).{{0,30}}[A-Za-z0-9+/=_-]{{20}}",
        caseless=True,
        pattern=re.compile(
            rf"(?i)\b(?:{KEYWORDS})\b[^\n]{{0,30}}?(?<![A-Za-z0-9+/=_-])"
            r"(?P<value>[A-Za-z0-9+/=_-]{20,200})(?![A-Za-z0-9+/=_-])"
        ),
        validate=_high_entropy,
    ),
]


def _chain(*iterators: Iterator[Span]) -> Iterator[Span]:
    for iterator in iterators:
        yield from iterator


SECRETS: list[Detector] = [*(to_detector(rule) for rule in provider_rules()), *GENERIC]
