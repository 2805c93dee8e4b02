"""Credentials, by the providers' published formats (prefixes, lengths, structure)."""

from __future__ import annotations

import base64
import functools
import json
import re

from tracegate.detectors.base import Detector, shannon_entropy

# Values that documentation uses in place of a real secret.
PLACEHOLDERS = re.compile(
    r"^(?:<[^>]*>|\$\{[^}]*\}|\{\{[^}]*\}\}|%[A-Z_]+%|\*+|x+|X+|\.+|"
    r"(?:your|my|the)[-_ ]?\w*|changeme|change[-_]me|example\w*|redacted|\[REDACTED[^\]]*\]|"
    r"null|none|true|false|undefined|password|secret|token|dummy|placeholder|test|xxx+)$",
    re.IGNORECASE,
)
HEX_OR_UUID = re.compile(
    r"^(?:[0-9a-f]{7,64}|[0-9A-F]{7,64}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)
KEYWORDS = (
    r"password|passwd|pwd|passphrase|secret|client[_-]?secret|api[_-]?key|apikey|access[_-]?key|"
    r"auth[_-]?token|access[_-]?token|refresh[_-]?token|bearer|token|credential|private[_-]?key"
)


# Word-shaped values ("Bearer", "basic", "NONE", "read_only") are settings, not secrets.
WORDS = re.compile(r"[A-Z]?[a-z]+(?:[ _-][A-Za-z]?[a-z]+)*|[A-Z]+(?:[ _-][A-Z]+)*")


def _not_placeholder(value: str) -> bool:
    return not PLACEHOLDERS.match(value.strip("'\""))


def _jwt(value: str) -> bool:
    header = value.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def _assigned_secret(value: str) -> bool:
    value = value.strip("'\"")
    if len(value) < 6 or not _not_placeholder(value) or value.isdigit():
        return False
    if HEX_OR_UUID.match(value) and len(value) in (7, 8, 12, 32, 36, 40, 64):
        return False  # git SHAs, UUIDs and digests are identifiers, not secrets
    # plain words are prose, not keys
    return not WORDS.fullmatch(value)


SECRET_KEY_WORDS = {"password", "passwd", "pwd", "passphrase", "secret", "token", "apikey"}
SECRET_KEY_NAMES = {
    "api_key", "access_key", "private_key", "client_secret", "auth_token", "access_token",
    "refresh_token", "secret_key", "secret_access_key", "session_token", "credentials",
}  # fmt: skip


@functools.lru_cache(maxsize=4096)
def is_secret_key_name(key: str) -> bool:
    """A JSON key that names a credential: its string value is judged as a whole."""
    lowered = key.lower().replace("-", "_").replace(".", "_")
    if any(lowered.endswith(name) for name in SECRET_KEY_NAMES):
        return True
    return bool(SECRET_KEY_WORDS & set(lowered.split("_")))


def is_assigned_secret(value: str) -> bool:
    return _assigned_secret(value)


def _high_entropy(value: str) -> bool:
    return (
        len(value) >= 20
        and not HEX_OR_UUID.match(value)
        and shannon_entropy(value) >= 3.5
        and bool(re.search(r"\d", value))
        and bool(re.search(r"[A-Za-z]", value))
    )


def _aws_key_id(value: str) -> bool:
    body = value[4:]
    return not (value.endswith("EXAMPLE") or re.fullmatch(r"X+", body) or len(set(body)) < 6)


def _aws_secret(value: str) -> bool:
    return shannon_entropy(value) >= 3.5


SECRETS: list[Detector] = [
    Detector(
        "aws_access_key_id",
        "secrets",
        anchor=r"(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}",
        pattern=re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
        validate=_aws_key_id,
    ),
    Detector(
        "aws_secret_access_key",
        "secrets",
        anchor=r"aws.{0,40}[A-Za-z0-9/+]{40}",
        caseless=True,
        pattern=re.compile(
            r"(?i)aws.{0,25}?(?:secret|private)?.{0,15}?['\"=:\s]\s*['\"]?"
            r"(?P<value>(?-i:[A-Za-z0-9/+]{40}))(?![A-Za-z0-9/+=])"
        ),
        validate=_aws_secret,
    ),
    Detector(
        "github_token",
        "secrets",
        anchor=r"(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})",
        pattern=re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{82})\b"),
    ),
    Detector(
        "gitlab_token",
        "secrets",
        anchor=r"gl(?:pat|dt|rt|ptt|ft|oas|cbt)-[A-Za-z0-9_-]{20}",
        pattern=re.compile(r"\bgl(?:pat|dt|rt|ptt|ft|oas|cbt)-[A-Za-z0-9_.-]{20,}"),
    ),
    Detector(
        "slack_token",
        "secrets",
        anchor=r"xox[abposr]-[0-9A-Za-z]",
        pattern=re.compile(r"\bxox[abposr]-(?:[0-9]+-)+[0-9A-Za-z-]{8,}"),
    ),
    Detector(
        "slack_webhook",
        "secrets",
        anchor=r"hooks\.slack\.com/(?:services|workflows)/",
        pattern=re.compile(
            r"https://hooks\.slack\.com/(?:services|workflows)/T[A-Z0-9]+/[A-Z0-9]+/[A-Za-z0-9]+"
        ),
    ),
    Detector(
        "stripe_key",
        "secrets",
        anchor=r"(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16}|whsec_[0-9A-Za-z]{16}",
        pattern=re.compile(
            r"\b(?:(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}|whsec_[0-9A-Za-z]{24,})\b"
        ),
    ),
    Detector(
        "anthropic_api_key",
        "secrets",
        anchor=r"sk-ant-(?:api|admin)\d\d-",
        pattern=re.compile(r"\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{80,}"),
    ),
    Detector(
        "openai_api_key",
        "secrets",
        anchor=r"sk-(?:proj-|svcacct-|admin-|[A-Za-z0-9]{20}T3BlbkFJ)",
        pattern=re.compile(
            r"\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})"
        ),
    ),
    Detector(
        "google_api_key",
        "secrets",
        anchor=r"AIza[0-9A-Za-z_-]{35}",
        pattern=re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    ),
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
        anchor=r"-----BEGIN [A-Z ]*PRIVATE KEY",
        pattern=re.compile(
            r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|\Z)", re.S
        ),
    ),
    Detector(
        "url_password",
        "secrets",
        anchor=r"://[^\s:/@]+:[^\s@/]+@",
        pattern=re.compile(
            r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]+:(?P<value>[^\s@/]{2,})@[^\s/]+", re.I
        ),
        validate=_not_placeholder,
    ),
    Detector(
        "secret_assignment",
        "secrets",
        anchor=rf"\b(?:{KEYWORDS})['\"]?\s*[:=]",
        caseless=True,
        pattern=re.compile(
            rf"(?i)\b(?:{KEYWORDS})['\"]?\s*(?::|=|=>)\s*['\"]?"
            r"(?P<value>[^\s'\",;}{)(\]]{6,})"
        ),
        validate=_assigned_secret,
    ),
    Detector(
        "high_entropy_secret",
        "secrets",
        anchor=rf"\b(?:{KEYWORDS})\b.{{0,30}}[A-Za-z0-9+/=_-]{{20}}",
        caseless=True,
        pattern=re.compile(
            rf"(?i)\b(?:{KEYWORDS})\b[^\n]{{0,30}}?(?<![A-Za-z0-9+/=_-])"
            r"(?P<value>[A-Za-z0-9+/=_-]{20,200})(?![A-Za-z0-9+/=_-])"
        ),
        validate=_high_entropy,
    ),
]
