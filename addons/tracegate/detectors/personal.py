"""Personal data, validated with python-stdnum and phonenumbers rather than by pattern alone."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

import phonenumbers
from stdnum import iban, luhn
from stdnum.us import ssn

from tracegate.detectors.base import Detector, Span

# RFC 2606 documentation domains with a generic mailbox are examples, not people.
PLACEHOLDER_MAILBOXES = {
    "user", "username", "name", "you", "your.name", "yourname", "someone", "somebody", "email",
    "foo", "bar", "test", "example", "john.doe", "jane.doe", "me", "admin", "info", "noreply",
    "no-reply", "firstname.lastname", "first.last",
}  # fmt: skip
PLACEHOLDER_DOMAINS = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|example|test|invalid)$")
CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6(?:011|5|4[4-9])|35|3(?:0[0-5]|[68]))")
VERSION_CONTEXT = re.compile(r"(?:\bv|version|release|ver\.?|==|>=|<=|~=)\s*$", re.IGNORECASE)


def _email(value: str) -> bool:
    local, _, domain = value.lower().rpartition("@")
    return not (local in PLACEHOLDER_MAILBOXES and PLACEHOLDER_DOMAINS.search(domain))


def _card(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    return 13 <= len(digits) <= 19 and bool(CARD_PREFIX.match(digits)) and luhn.is_valid(digits)


CARD_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,}(?![\d-])")
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
    return ssn.is_valid(value)


PHONE_CANDIDATE = re.compile(r"(?:\+|\b)\d[\d ().-]{6,}\d")


DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")


def _could_be_phone(candidate: str) -> bool:
    """Cheap checks before phonenumbers: E.164 numbers have at most 15 digits (and national
    ones at least 7), and date shapes are never phone numbers."""
    digits = sum(c.isdigit() for c in candidate)
    return 7 <= digits <= 15 and not DATE_LIKE.fullmatch(candidate.strip())


def _phones(text: str) -> Iterator[Span]:
    """phonenumbers' own matcher (it knows national formats and rejects dates and IDs), run on
    a small window around each digit run rather than the whole text."""
    last_end = 0
    for candidate in PHONE_CANDIDATE.finditer(text):
        if candidate.start() < last_end or not _could_be_phone(candidate.group()):
            continue
        lo, hi = max(0, candidate.start() - 6), min(len(text), candidate.end() + 6)
        window = text[lo:hi]
        for match in phonenumbers.PhoneNumberMatcher(
            window, "US", leniency=phonenumbers.Leniency.VALID
        ):
            yield lo + match.start, lo + match.end
            last_end = lo + match.end


IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
IPV6 = re.compile(r"(?<![0-9A-Za-z:.])[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*(?![0-9A-Za-z:])")


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
    for match in IPV6.finditer(text):
        candidate = match.group().rstrip(".")
        if not re.search(r"[0-9A-Fa-f]", candidate):
            continue
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
        anchor=r"\d{4}[ -]?\d{4}[ -]?\d{4}",
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
        anchor=r"\d{3}-\d{2}-\d{4}",
        pattern=re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"),
        validate=_ssn,
    ),
    Detector(
        "phone",
        "pii",
        anchor=r"\d[\d ().-]{6,}\d",
        finder=_phones,
        keep=2,
    ),
    Detector("ipv4", "pii", anchor=r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", finder=_ipv4s, keep=0),
    Detector("ipv6", "pii", anchor=r"[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:", finder=_ipv6s, keep=0),
]
