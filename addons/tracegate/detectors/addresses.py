"""Street addresses: a street line (house number and street-type word, in the orders of the
countries that write them) or a house number next to a postcode, extended over the unit and
the postcode and town that follow.

Patterns only, no gazetteer: the street-type words are the postal standards' own (USPS
Publication 28 suffixes, Royal Mail thoroughfares, and the French, German, Dutch, Italian,
Spanish, Portuguese, Polish, Hungarian, Swedish, Danish, Czech and Indian words for street,
road, square...), and postcodes follow each country's published format. An address needs two
of: house number, street-type word, postcode; a bare five-digit number is never enough.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from tracegate.detectors.base import Detector, Span

# Separate words, written before or after the street's name.
STREET_WORDS = (
    # USPS Publication 28 suffixes (full and abbreviated), and Royal Mail thoroughfares
    "street|st|avenue|ave|av|road|rd|boulevard|blvd|drive|dr|lane|ln|court|ct|way|place|pl|"
    "square|sq|terrace|ter|close|crescent|cres|parkway|pkwy|highway|hwy|freeway|expressway|"
    "circle|cir|trail|trl|walk|walks|row|mews|grove|gardens|gdns|hill|hills|bypass|byway|"
    "entrance|valley|vly|loop|path|pike|alley|aly|plaza|plz|point|pt|ridge|rdg|run|crossing|"
    "xing|junction|jct|heights|hts|meadow|meadows|park|pass|port|ports|green|glen|fields|"
    "landing|lodge|mill|mills|mount|mountain|mountains|orchard|oval|rapids|rest|river|shore|"
    "shores|spring|springs|station|summit|throughway|trace|track|tunnel|turnpike|union|"
    "unions|via|view|views|village|villages|ville|vista|wall|well|wells|extension|ext|estate|"
    "estates|fort|forge|forges|ford|fords|falls|ferry|flat|flats|gateway|harbor|harbour|"
    "haven|island|isle|key|keys|knoll|knolls|lake|lakes|manor|manors|mission|motorway|neck|"
    "pines|plain|plains|prairie|radial|ranch|causeway|center|centre|cliff|cliffs|club|common|"
    "commons|corner|corners|course|courts|cove|coves|creek|crest|curve|dale|dam|divide|"
    "drives|brook|brooks|burg|burgs|bluff|bluffs|bottom|branch|bridge|canyon|cape|camp|"
    "arcade|approach|broadway|chase|concourse|esplanade|promenade|quay|rise|wynd|gate|"
    "gardens|parade|passage|vale|villas|yard|yards|greens|grn|lights|lock|locks|loaf|"
    # French, Italian, Spanish, Catalan, Portuguese
    "rue|avenue|bd|boulevard|chemin|ch|impasse|imp|allée|allee|place|quai|cours|route|rte|venelle|"
    "faubourg|fbg|passage|square|sentier|voie|ruelle|"
    "via|viale|piazza|piazzale|corso|largo|vicolo|strada|contrada|borgo|lungomare|salita|"
    "incrocio|rotonda|calle|c|avda|avenida|plaza|paseo|pº|carrer|camino|ronda|travesía|"
    "travesia|cañada|carretera|ctra|glorieta|urbanización|urb|pasaje|rambla|callejón|"
    "rua|rúa|r|travessa|tv|praça|pça|alameda|al|estrada|rodovia|rod|largo|beco|ladeira|"
    "conjunto|jardim|quadra|setor|vila|residencial|loteamento|núcleo|chácara|sítio|"
    "fazenda|parque|recanto|vereda|viela|passarela|trecho|trevo|morro|lagoa|lago|"
    # German, Dutch, Scandinavian, Central European (separate words)
    "straße|strasse|str|weg|allee|platz|gasse|ring|damm|ufer|chaussee|"
    "straat|laan|plein|gracht|kade|singel|dijk|steeg|dreef|"
    "gatan|vägen|väg|gränd|torget|stigen|gade|vej|allé|"
    "ul|ulica|aleja|plac|os|osiedle|utca|út|tér|köz|körút|sor|sétány|"
    "nám|náměstí|třída|nábřeží|"
    # India
    "nagar|marg|colony|sector|chowk|gali|lane|road|layout|enclave|vihar|bagh|puram"
)
# German, Dutch, Scandinavian, Czech and Hungarian streets are one word with the type at the end.
STREET_SUFFIXES = (
    "straße|strasse|str\\.|weg|allee|platz|gasse|ring|damm|ufer|steig|pfad|"
    "straat|laan|plein|gracht|kade|singel|dijk|steeg|dreef|hof|pad|state|baan|markt|wal|"
    "gatan|vägen|väg|gränd|torget|stigen|backen|gade|vej|stræde|"
    "ova|ská|ského|ní|utca"
)


def trie(words: list[str]) -> str:
    """One regex alternation for many words, factored by prefix ("av|ave|avenue" becomes
    "av(?:e(?:nue)?)?"): Python's engine then tries a few branches at each position, not all."""
    root: dict = {}
    for word in set(words):
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(c) + build(child) for c, child in sorted(node.items()) if c]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if ends:
            return f"(?:{body})?"
        return body

    return build(root)


NUMBER = r"\d{1,5}(?:\s?[A-Za-z](?![\w]))?(?:\s?[/-]\s?\d{1,5}[A-Za-z]?)?"
UPPER = "A-ZÀ-ÖØ-ÞĀĂĄĆČĎĐĘĚĞİŁŃŇŐŒŘŚŞŠŢŤŮŰŹŻŽ"
PARTICLE = (
    r"(?:de|la|le|del|della|di|da|do|dos|das|du|des|van|von|der|den|het|y|e|of|the|am|an|an der)"
)
# Street and town names are capitalised ("Karen Valley", "5th Avenue"), particles aside.
NAME_WORD = rf"(?:[{UPPER}]|\d{{1,3}}(?:st|nd|rd|th|e|er|º|ª)?[ ]?)[\w'\u2019.\-]*"
NAME = rf"{NAME_WORD}(?:[ ](?:{PARTICLE}[ ])*{NAME_WORD}){{0,4}}"
SUFFIX_TRIE = trie(STREET_SUFFIXES.replace("\\.", ".").split("|"))
WORD_TRIE = trie(STREET_WORDS.split("|"))
WORD = rf"(?i:{WORD_TRIE})\.?"
STREET_LINE = re.compile(
    "|".join(
        [
            # 12 High Street / 2616 Karen Valley / 36, chemin Dos Santos / 276 Viale Biccari
            rf"(?<![\w./-]){NUMBER},?[ ](?:{NAME}[ ])?{WORD}(?![\w])(?:[ ]{NAME})?",
            # Via Roma 12 / Calle de X 12 / ul. Kwiatowa 12/3 / Rua X, 123 / Kossuth utca 12.
            rf"(?<![\w]){WORD}[ ](?:(?:{PARTICLE}|{NAME_WORD})[ ]){{0,5}}?{NAME_WORD},?[ ]"
            rf"{NUMBER}(?![\w])",
            rf"(?<![\w]){NAME}[ ]{WORD}[ ]{NUMBER}(?![\w])",
            # Hauptstraße 5 / Daansteeg 6 / Villagatan 56 / 554 Livornovej
            rf"(?<![\w./-]){NUMBER},?[ ]{NAME_WORD}(?i:{SUFFIX_TRIE})(?![\w])",
            rf"(?<![\w])(?:{NAME_WORD}[ -])?{NAME_WORD}(?i:{SUFFIX_TRIE})[ ]{NUMBER}(?![\w])",
        ]
    )
)
POSTCODE = re.compile(
    "|".join(
        [
            r"(?:[A-Z]{1,2}-)?\d{5}(?:-\d{4})?",  # US, DE, FR, IT, ES, FI (and H-, D-, F- forms)
            r"\d{5}-\d{3}",  # BR
            r"\d{2}-\d{3}",  # PL
            r"\d{3}[ ]\d{2}",  # SE, CZ, SK, GR
            r"(?:[A-Z]{1,2}-)?\d{4}(?:[ ]?[A-Z]{2}(?![a-z]))?",  # NL, BE, AT, CH, DK, HU, AU, NO
            r"\d{6}|\d{3}[ ]\d{3}",  # IN
            r"[A-Z]{1,2}\d[A-Z\d]?[ ]?\d[A-Z]{2}",  # GB
            r"[A-Z]\d[A-Z][ ]?\d[A-Z]\d",  # CA
            r"[AC-FHKNPRTV-Y]\d{2}[ ]?[AC-FHKNPRTV-Y0-9]{4}",  # IE Eircode
        ]
    )
)
TOWN_WORD = rf"[{UPPER}][\w'\u2019.\-]*"
TOWN_PARTICLE = r"(?:de|la|le|del|di|am|an|der|sur|en|upon|on)(?=[ ])"
CITY = rf"{TOWN_WORD}(?:[ ](?:{TOWN_WORD}|{TOWN_PARTICLE}|\(\w+\)|/[ ]?[A-Z]{{2}}))*"
# What may follow a street line: a unit, then postcode and town in either order, on the same
# line or the next (", ", "\n", " - "), with a region or country after.
UNIT = re.compile(
    r"(?:,?[ ]|\n)(?i:apt|apartment|suite|ste|unit|flat|floor|fl|piso|piano|étage|bus|"
    r"bte|app|lgh|door|puerta|pta|esc|room|rm|#)\.?[ ]?[\w/-]{1,6}\b|,?[ ][0-9]{1,2}(?:º|ª|°)\b"
)
TAIL = re.compile(
    rf"(?:,[ ]?|\n|[ ]-[ ]|[ ])(?:"
    rf"(?:{POSTCODE.pattern})[ ,]+{CITY}"  # 12345 Berlin / 75001 Paris / 1234 AB Amsterdam
    rf"|{CITY},?[ ](?:[A-Z]{{2,3}},?[ ])?(?:{POSTCODE.pattern})"  # Myershaven, PA 76280
    rf"|{CITY}\n(?:{POSTCODE.pattern})"  # Walkerhaven\nPE3 5SY
    rf"|(?:{POSTCODE.pattern})(?![\w])"  # a postcode alone (Eircode, UK on their own line)
    r")"
)
POSTCODE_AND_TOWN = re.compile(rf"(?<![\w]){NAME}[ ]{NUMBER},?[ ](?:{POSTCODE.pattern})[ ]{CITY}")


def _extend(text: str, end: int) -> int:
    """Past the unit, postcode and town that follow a street line (within ~90 characters)."""
    limit = end + 90
    unit = UNIT.match(text, end)
    if unit:
        end = unit.end()
    tail = TAIL.match(text, end, min(len(text), limit))
    if tail and any(c.isdigit() for c in tail.group()):
        end = tail.end()
    # A region or country after the town: ", NSW, 2692", " (TN)", " / MG".
    more = re.compile(r",[ ]?[A-Z]{2,3}(?:,[ ]?\d{4})?\b|[ ]\([A-Z]{2}\)|[ ]/[ ][A-Z]{2}\b")
    extra = more.match(text, end)
    return extra.end() if extra else end


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while end > start and text[end - 1] in " ,.-\n":
        end -= 1
    return start, end


DIGIT = re.compile(r"\d")
MAX_WINDOW = 480  # characters the exact patterns see at once, however many street words
# A house number, then a postcode with a town's capital after it ("12, 10115 Berlin").
NUMBER_THEN_POSTCODE = re.compile(
    rf"\d{{1,5}},?[ ](?:\d{{2,5}}|[A-Z]{{1,2}}-\d{{4}})(?=[\dA-Z \-]{{0,9}}[ ][{UPPER}])"
)


# Where street words stand: a separate street word, or a word that ends in a street suffix.
# Found word by word: a set lookup and a suffix test per word are several times faster than
# one regex backtracking through every word (tests/test_detectors.py holds that regex and
# checks both find the same places).
LETTER_RUN = re.compile(r"[^\W\d_]+")
STREET_WORD_SET = frozenset(STREET_WORDS.split("|"))
PLAIN_SUFFIXES = tuple(s for s in STREET_SUFFIXES.split("|") if not s.endswith("\\."))
DOTTED_SUFFIXES = tuple(s[:-2] for s in STREET_SUFFIXES.split("|") if s.endswith("\\."))


def street_spots(text: str) -> list[int]:
    """Where a street-type word, or a word ending in a street suffix, starts."""
    spots = []
    for match in LETTER_RUN.finditer(text):
        word = match.group().lower()
        if (
            word in STREET_WORD_SET
            or word.endswith(PLAIN_SUFFIXES)
            or (
                word.endswith(DOTTED_SUFFIXES)
                and text.startswith(".", match.end())
                and not text[match.end() + 1 : match.end() + 2].isalpha()
            )
        ):
            spots.append(match.start())
    return spots


WORD_CHAR = re.compile(r"\w")


def _may_anchor(text: str, spot: int) -> bool:
    """Whether the street word at `spot` can be part of a street line: every pattern wants it
    to end its token ("Street," "Hauptstraße 5"), and a separate street word to start one as
    well, so the letters inside ids and hex ("4c3f", "0x9bd1") never open a window."""
    end = LETTER_RUN.match(text, spot).end()  # type: ignore[union-attr]
    if WORD_CHAR.match(text, end):
        return False
    word = text[spot:end].lower()
    return (
        spot == 0
        or not WORD_CHAR.match(text, spot - 1)
        or word.endswith(PLAIN_SUFFIXES)
        or (word.endswith(DOTTED_SUFFIXES) and text.startswith(".", end))
    )


def _windows(text: str) -> list[tuple[int, int]]:
    """Stretches of text around street-type words and number-then-postcode shapes: the exact
    patterns run only there, not over the whole text."""
    spots = [spot for spot in street_spots(text) if _may_anchor(text, spot)]
    spots.extend(m.start() for m in NUMBER_THEN_POSTCODE.finditer(text))
    windows: list[tuple[int, int]] = []
    for spot in sorted(spots):
        if not DIGIT.search(text, max(0, spot - 48), spot + 48):
            continue  # every address shape has its house number near the street word
        lo, hi = max(0, spot - 72), min(len(text), spot + 72)
        if windows and lo <= windows[-1][1] and hi - windows[-1][0] <= MAX_WINDOW:
            windows[-1] = (windows[-1][0], hi)
        else:
            windows.append((lo, hi))
    return windows


def _addresses(text: str) -> Iterator[Span]:
    last = -1
    for lo, hi in _windows(text):
        yield from _addresses_in(text, lo, hi, last)
        last = hi


def _addresses_in(text: str, lo: int, hi: int, last: int) -> Iterator[Span]:
    for pattern in (STREET_LINE, POSTCODE_AND_TOWN):
        for match in pattern.finditer(text, lo, hi):
            start, end = match.span()
            if start < last:
                continue
            if not any(c.isdigit() for c in match.group()):
                continue
            # "Flat 1\n12 High Street": the unit line before belongs to the address.
            before = re.search(
                r"(?i:flat|apt|apartment|unit|suite)\.?[ ]?\w{1,5},?\s$",
                text[max(0, start - 16) : start],
            )
            if before:
                start -= len(before.group())
            end = _extend(text, end)
            start, end = _trim(text, start, end)
            last = end
            yield start, end


ADDRESS_KEY = re.compile(
    r"(?i)(?:^|[_\-.])(?:address|addr|street|street_address|address_line\d?|address\d|"
    r"shipping_address|billing_address|home_address|mailing_address|postal_address|residence)$"
)
NOT_ADDRESS_KEY = re.compile(
    r"(?i)(?:ip|mac|email|e_mail|wallet|memory|remote|server|host)_?addr(?:ess)?$"
)


def _whole(value: str) -> bool:
    """A field named for an address: a number and a word, not an IP or e-mail address."""
    value = value.strip()
    return (
        6 <= len(value) <= 200
        and "@" not in value
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and not re.fullmatch(r"[\d.:a-fA-F]+", value)
    )


def key_policy(key: str) -> str | None:
    if NOT_ADDRESS_KEY.search(key):
        return None
    return "whole" if ADDRESS_KEY.search(key) else None


def address_detector() -> Detector:
    return Detector(
        "street_address",
        "pii",
        # What opens a window in `_windows`: a street word, a number beside a word with a
        # street suffix (either order), a house number then a postcode with a capitalised
        # word after it (NUMBER_THEN_POSTCODE, with case: "took 12 345 ms" opens nothing).
        anchor=(
            rf"\b(?:{STREET_WORDS})\b|"
            rf"(?:{STREET_SUFFIXES}),?[ ]\d|\d,?[ ][^\s\d]{{1,30}}(?:{STREET_SUFFIXES})|"
            r"(?-i:\d{1,5},?[ ](?:\d{2,5}|[A-Z]{1,2}-\d{4})[\dA-Z \-]{0,9}[ ][^\x00-\x40\x5b-\x7f])"
        ),
        caseless=True,
        finder=_addresses,
        whole=_whole,
        key_policy=key_policy,
        keep=0,
    )
