"""Phone numbers in international and national formats, for a configurable set of regions.

Candidates are chosen by shape before phonenumbers is asked: digit groups joined by the
separators people write (space, `-`, `.`, `/`, parentheses), 7 to 15 digits, not a date, a
time, an IP address or an amount, not the tail of an id (`ORD-2025-692535`, `SKU-…`, `#…`) and
not right after a word that names an id. A bare run of digits (no separators) counts only when
it is international (`+`, `00`), national with a trunk `0`, or next to a word that says phone.
Then phonenumbers validates it in the regions a number of that shape can belong to; results
are cached, since traces repeat the same numbers.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from tracegate.detectors.base import Detector, Span

DEFAULT_REGIONS = (
    "US", "CA", "GB", "IE", "DE", "FR", "IT", "ES", "PT", "NL", "BE", "CH", "AT", "PL", "SE",
    "JP", "AU", "IN", "BR", "MX",
)  # fmt: skip
SEPARATORS = " \u00a0\u2009\u202f().-/"
CANDIDATE = re.compile(
    r"(?<![\w+#/.:=-])(?:\+|00|\()?\d(?:[\d \u00a0\u2009\u202f().\-/]{5,24})\d(?![\w/]|[.,]\d|-\w)"
)
DATE_OR_TIME = re.compile(
    r"\d{4}[-/. ]\d{1,2}[-/. ]\d{1,2}|\d{1,2}[-/. ]\d{1,2}[-/. ]\d{2,4}"
    r"|\d{1,2}[:.]\d{2}(?:[:.]\d{2})?"
)
DATE_START = re.compile(
    r"(?:19|20)\d\d[-/.](?:0?[1-9]|1[0-2])[-/.](?:0?[1-9]|[12]\d|3[01])\b"
    r"|(?:0?[1-9]|[12]\d|3[01])[-/.](?:0?[1-9]|[12]\d|3[01])[-/.](?:19|20)\d\d\b"
)
SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")
IPV4_SHAPE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
DECIMAL = re.compile(r"(?!0\d)\d+[.,]\d+")  # "01204.970620" is a number, not a decimal
ID_WORDS = {
    "order", "ord", "ticket", "tkt", "case", "sr", "inc", "incident", "build", "ref",
    "reference", "invoice", "inv", "po", "sku", "id", "no", "nr", "acct", "account", "tracking",
    "version", "v", "release", "job", "run", "pr", "issue", "item", "batch", "request", "req",
    "serial", "policy", "claim", "customer", "cust", "shipment", "parcel", "iban", "ssn",
}  # fmt: skip
UNIT_AFTER = re.compile(
    r"\s?(?:%|[€$£¥₹]|(?:eur|usd|gbp|chf|sek|pln|kr|zł|ms|s|sec|secs|seconds|min|mins|bytes?|kb|mb|gb|"
    r"tokens?|rows?|items?|users?|requests?|reqs|times|x|px|km|m|kg|g)\b)",
    re.IGNORECASE,
)
CONTEXT = re.compile(
    r"(?i)(?:phone|tel|telephone|mobile|mob|cell|call|calls|sms|text|whatsapp|fax|contact|reach|"
    r"dial|ring|number|nummer|numéro|teléfono|telefono|telefon|handy|portable|móvil|cellulare|☎|📞)"
    r"[^\n\d]{0,20}$"
)
PHONE_KEY = re.compile(
    r"(?:^|[_\-.])(?i:phone|mobile|cell|tel|telephone|fax|msisdn|whatsapp)(?:$|[_\-.])"
    r"|^(?i:phone|mobile|tel)(?=$|[A-Z0-9])"  # phoneNumber, mobilePhone, tel2 (not telemetry)
)
ID_KEY = re.compile(
    r"(?i)(?:^|[_\-.])(?:id|ids|uuid|sku|order|ticket|ref|invoice|tracking|account|acct|serial|"
    r"number|no|nr|code|hash|checksum|version|count|total|size|bytes|ms|ts|time|timestamp)$"
)


def trunk_regions(regions: Sequence[str]) -> tuple[str, ...]:
    return tuple(r for r in regions if PhoneMetadata.metadata_for_region(r).national_prefix == "0")


class PhoneFinder:
    """The phone detector's finder, bound to a set of regions."""

    def __init__(self, regions: Sequence[str] = DEFAULT_REGIONS) -> None:
        unknown = [r for r in regions if PhoneMetadata.metadata_for_region(r) is None]
        if unknown:
            raise ValueError(f"unknown phone regions: {', '.join(unknown)}")
        self.regions = tuple(regions)
        # Validity is "any region": regions that accept the most lengths are tried first, so
        # a valid number is settled after the fewest parses (the answer is the same).
        widest = sorted(self.regions, key=_lengths, reverse=True)
        self.trunk = trunk_regions(widest)
        self.no_trunk = tuple(r for r in widest if r not in self.trunk)
        self.valid = functools.lru_cache(maxsize=8192)(self._valid)
        self._shapes = {region: _shape(region) for region in self.regions}

    def __call__(self, text: str) -> Iterator[Span]:
        for match in CANDIDATE.finditer(text):
            start, end = match.span()
            candidate = match.group()
            while candidate and candidate[-1] in SEPARATORS:
                candidate, end = candidate[:-1], end - 1
            if candidate.startswith("(") and ")" not in candidate:
                candidate, start = candidate[1:], start + 1
            if self._plausible(text, start, end, candidate):
                yield start, end

    def _plausible(self, text: str, start: int, end: int, candidate: str) -> bool:
        digits = "".join(c for c in candidate if c.isdigit())
        if not 7 <= len(digits) <= 15:
            return False
        if DATE_OR_TIME.fullmatch(candidate) or IPV4_SHAPE.fullmatch(candidate):
            return False
        if SSN_SHAPE.fullmatch(candidate):  # 123-45-6789 is written for SSNs, not phones
            return False
        if DECIMAL.fullmatch(candidate) or UNIT_AFTER.match(text, end):
            return False
        if (
            DATE_START.match(candidate)
            or text[end : end + 1] == ":"
            or text[start - 1 : start] == ":"
        ):
            return False  # a date and time: "2025-08-21 22:15", "19/05/2027 10:20"
        before = text[max(0, start - 24) : start]
        word = re.search(r"([A-Za-z]+)[\s:#.\-]*$", before)
        if word and word.group(1).lower() in ID_WORDS:
            return False
        international = candidate[0] == "+" or candidate.startswith("00")
        bare = candidate.isdigit()
        if bare and not international and digits[0] != "0" and not CONTEXT.search(before):
            return False
        return self.valid(digits, international)

    def _valid(self, digits: str, international: bool) -> bool:
        if international:
            number = "+" + (digits[2:] if digits.startswith("00") else digits)
            return _is_valid(number, None)
        regions = self.trunk if digits[0] == "0" else self.no_trunk + self.trunk
        if digits[0] == "0" and "IT" in self.regions:
            regions = (*regions, "IT")  # Italian fixed lines keep their leading 0
        return any(self._shapes[region](digits) and _is_valid(digits, region) for region in regions)

    def whole(self, value: str) -> bool:
        """A field that holds a phone number (under a key such as `phone`): any format."""
        value = value.strip()
        digits = "".join(c for c in value if c.isdigit())
        if not 7 <= len(digits) <= 15 or any(c.isalpha() for c in value.replace("ext", "")):
            return False
        international = value.startswith(("+", "00"))
        return self.valid(digits, international)


def _shape(region: str) -> Callable[[str], bool]:
    """A necessary condition for `_is_valid(digits, region)`, regex tests some 50 times
    cheaper than parsing. The national number that parsing validates is the digits, less the
    region's country code and/or its national (trunk, carrier) prefix, and it matches the
    general pattern of one of the regions of that country code (the number is judged as
    theirs). Digits that start with the region's international prefix are judged as dialled
    abroad, and a prefix rewritten by a transform rule (Japan, Brazil) may leave any suffix:
    both are always parsed."""
    metadata = PhoneMetadata.metadata_for_region(region)
    code = metadata.country_code
    general = re.compile(
        "|".join(
            f"(?:{other.general_desc.national_number_pattern})"
            for other in map(PhoneMetadata.metadata_for_region, COUNTRY_CODE_TO_REGION_CODE[code])
            if other is not None and other.general_desc.national_number_pattern
        )
    )
    if metadata.national_prefix_transform_rule:
        return lambda digits: True
    abroad = re.compile(metadata.international_prefix or "(?!)")
    trunk = re.compile(metadata.national_prefix_for_parsing or "(?!)")
    country = str(code)

    def shape(digits: str) -> bool:
        if abroad.match(digits):
            return True
        rests = [digits]
        if digits.startswith(country):
            rests.append(digits[len(country) :])
        for rest in list(rests):
            prefix = trunk.match(rest)
            if prefix:
                rests.append(rest[prefix.end() :])
        return any(general.fullmatch(rest) for rest in rests)

    return shape


def _lengths(region: str) -> int:
    return len(PhoneMetadata.metadata_for_region(region).general_desc.possible_length)


def _is_valid(number: str, region: str | None) -> bool:
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed)


def key_policy(key: str) -> str | None:
    """`whole` for a key that names a phone, `skip` for one that names an id or a quantity."""
    if PHONE_KEY.search(key):
        return "whole"
    if ID_KEY.search(key):
        return "skip"
    return None


def phone_detector(regions: Sequence[str] = DEFAULT_REGIONS) -> Detector:
    finder = PhoneFinder(regions)
    return Detector(
        "phone",
        "pii",
        # CANDIDATE with 7 to 15 digits (as `_plausible` wants), its lookarounds spelt as
        # the characters around it (hyperscan has none): a nanosecond timestamp or a long id
        # is never looked at.
        anchor=(
            r"(?:^|[^\w+#/.:=\-])(?:\+|00|\()?\d(?:[ ().\-/]*\d){6,14}"
            r"(?:$|[^\w/.,\-]|[.,](?:$|\D)|-(?:$|\W))"
        ),
        finder=finder,
        whole=finder.whole,
        key_policy=key_policy,
        keep=2,
    )
