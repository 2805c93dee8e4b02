"""Personal data, validated with python-stdnum and phonenumbers rather than by pattern alone."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from stdnum import iban, luhn
from stdnum.us import ssn

from tracegate.detectors.addresses import address_detector
from tracegate.detectors.base import Detector, Span
from tracegate.detectors.names import name_detector
from tracegate.detectors.phones import phone_detector

# RFC 2606 documentation domains with a generic mailbox are examples, not people.
PLACEHOLDER_MAILBOXES = {
    "user", "username", "name", "you", "your.name", "yourname", "someone", "somebody", "email",
    "foo", "bar", "test", "example", "john.doe", "jane.doe", "me", "admin", "info", "noreply",
    "no-reply", "firstname.lastname", "first.last",
}  # fmt: skip
PLACEHOLDER_DOMAINS = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|example|test|invalid)$")
CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5|4[4-9])|35|3(?:0[0-5]|[68]))")
VERSION_CONTEXT = re.compile(
    r"(?:\bv|version|release|ver\.?|build|python|node|java|go|ruby|php|==|>=|<=|~=|@)\s*$",
    re.IGNORECASE,
)


def _email(value: str) -> bool:
    local, _, domain = value.lower().rpartition("@")
    return not (local in PLACEHOLDER_MAILBOXES and PLACEHOLDER_DOMAINS.search(domain))


def _card(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    return 13 <= len(digits) <= 19 and bool(CARD_PREFIX.match(digits)) and luhn.is_valid(digits)


CARD_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,22}(?![\d-])")
DIGIT_GROUP = re.compile(r"\d+")


def _cards(text: str) -> Iterator[Span]:
    """Card numbers inside digit runs: the longest valid run of whole digit groups wins, so a
    card followed by another number ("4111 1111 1111 1111 42") is still found."""
    for match in CARD_CANDIDATE.finditer(text):
        groups = [(g.start(), g.end()) for g in DIGIT_GROUP.finditer(match.group())]
        base, i = match.start(), 0
        while i < len(groups):
            for j in range(len(groups) - 1, i - 1, -1):
                start, end = base + groups[i][0], base + groups[j][1]
                if _card(text[start:end]):
                    yield start, end
                    i = j
                    break
            i += 1


def _iban(value: str) -> bool:
    return iban.is_valid(value.replace(" ", ""))


def _ssn(value: str) -> bool:
    digits = re.sub(r"[ .-]", "", value)
    if len(set(value) - set("0123456789")) > 1:
        return False  # mixed separators: 123-45 6789 is not written by anyone
    return len(digits) == 9 and ssn.is_valid(digits) and len(set(digits)) > 1


SSN_GROUPED = re.compile(r"(?<![\d.-])\d{3}([- .])\d{2}\1\d{4}(?![\d-]|\.\d)")
SSN_BARE = re.compile(r"(?<![\d.-])\d{9}(?![\d-]|\.\d)")
SSN_CONTEXT = re.compile(
    r"(?i)(?:ssn|ssns|social\s+security(?:\s+(?:no|number|#))?|tax\s*(?:payer\s*)?id|tin|itin)"
    r"\W{0,6}(?:(?:is|was|number|no|on\s+file|:|#)\W{0,3}){0,3}$"
)
SSN_KEY = re.compile(r"(?i)(?:^|[_\-.])(?:ssn|tax_?id|tin|itin|social_security(?:_number)?)$")


def _ssns(text: str) -> Iterator[Span]:
    for match in SSN_GROUPED.finditer(text):
        if _ssn(match.group()):
            yield match.span()
    for match in SSN_BARE.finditer(text):
        before = text[max(0, match.start() - 40) : match.start()]
        if SSN_CONTEXT.search(before) and _ssn(match.group()):
            yield match.span()


def _ssn_key(key: str) -> str | None:
    return "whole" if SSN_KEY.search(key) else None


IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")
# One maximal run of address characters (linear: no nested choice of where the colons are).
IPV6_RUN = re.compile(r"(?<![0-9A-Za-z:.])[0-9A-Fa-f:.]{2,}")


def _ipv4s(text: str) -> Iterator[Span]:
    for match in IPV4.finditer(text):
        if VERSION_CONTEXT.search(text, max(0, match.start() - 12), match.start()):
            continue
        try:
            ipaddress.IPv4Address(match.group())
        except ValueError:
            continue
        yield match.span()


def _ipv6s(text: str) -> Iterator[Span]:
    for match in IPV6_RUN.finditer(text):
        candidate = match.group().rstrip(".")
        end = match.end()
        if candidate.count(":") < 2 or len(candidate) > 45:
            continue
        if end < len(text) and (text[end].isalnum() or text[end] == ":"):
            continue  # part of a longer token ("fe80::1abz")
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield match.start(), match.start() + len(candidate)


PERSONAL: list[Detector] = [
    Detector(
        "email",
        "pii",
        anchor=r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]+\.[A-Za-z]",
        pattern=re.compile(
            r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
        ),
        validate=_email,
        keep=0,
    ),
    Detector(
        "card",
        "pii",
        # 13 digits from the start of a digit group whose first digit a card number can
        # have (timestamps in milliseconds start with 1).
        anchor=r"(?:^|\D)[2-6](?:[ -]?\d){12}",
        finder=_cards,
    ),
    Detector(
        "iban",
        "pii",
        anchor=r"[A-Z]{2}\d{2} ?[A-Z0-9]{4}",
        pattern=re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        validate=_iban,
    ),
    Detector(
        "ssn",
        "pii",
        # Grouped, or bare after a word that says SSN (the bare form needs it): SSN_CONTEXT's
        # words with no digit between them and the number.
        anchor=(
            r"\d{3}[- .]\d{2}[- .]\d{4}|"
            r"(?:ssn|social\W+security|tax\W*(?:payer\W*)?id|tin|itin)\D{0,40}\d{9}"
        ),
        caseless=True,
        finder=_ssns,
        whole=_ssn,
        key_policy=_ssn_key,
    ),
    phone_detector(),
    Detector("ipv4", "pii", anchor=r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", finder=_ipv4s, keep=0),
    Detector("ipv6", "pii", anchor=r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:", finder=_ipv6s, keep=0),
    name_detector(),
    address_detector(),
]
