"""Person names in free text and in fields named for a person.

Dictionaries, not a model (no NER runs within the data path's speed budget): given names of 54
countries from the data file of the `gender-guesser` package (Jörg Michael's `nam_dict.txt`,
GNU FDL data: read as a file, its GPL code is never imported) plus the US Census 1990 first and
last names of the `names` package (public domain), and a stop-list of the 25,000 most frequent
English words (`wordfreq`) minus those dictionaries, so "Update" or "Period" never make a name.
None of it is the test data generators' (Faker's, mimesis') own lists.

In text, a run of capitalised tokens (initials, particles such as `van der`, and titles around
them) is a name when, with stop-words trimmed from its ends, it has two or more tokens of which
one is a known given name (in either order: "Kovács Zsófia") and none is a stop-word; or when
a context word comes right before it ("Dear", "Mr", "my name is", "regards,") — then a
single capitalised token is enough. Under a key that names a person (`customer_name`,
`author`...), a value of one to five capitalised tokens is a name.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from importlib import resources

import regex

from tracegate.detectors.base import Detector, Span

TOKEN = re.compile(r"[^\W\d_](?:[^\W\d_]|['\u2019\-][^\W\d_])*\.?")
PARTICLES = {
    "van", "von", "der", "den", "de", "del", "della", "di", "da", "dos", "das", "du", "la", "le",
    "ten", "ter", "bin", "ibn", "al", "el", "y", "e", "zu", "af", "av",
}  # fmt: skip
TITLES = {
    "mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "dame", "madam", "mme", "mlle", "m",
    "herr", "frau", "sr", "sra", "srta", "dott", "dottssa", "sig", "pan", "pani", "ing", "mgr",
    "shri", "smt", "mister", "doctor", "professor", "rev", "fr", "st",
}  # fmt: skip
SUFFIXES = {"jr", "sr", "ii", "iii", "iv", "phd", "md", "dds", "esq", "mba", "bsc", "msc"}
INTRODUCERS = {
    "dear", "hi", "hello", "hey", "greetings", "thanks", "regards", "sincerely", "cheers",
    "signed", "attn", "customer", "client", "patient", "contact", "agent", "assignee",
    "reporter", "requester", "employee", "guest", "caller", "recipient", "sender",
}  # fmt: skip
# Words after which a capitalised word is a name ("Dear Ana", "assigned to Kovács").
CONTEXT_WORDS = (
    "dear", "hi", "hello", "hey", "greetings", "thanks", "thank you", "regards", "sincerely",
    "cheers", "signed", "attn", "attention", "name is", "i am", "i'm", "customer", "client",
    "patient", "contact", "agent", "assignee", "assigned to", "reporter", "requester",
    "employee", "guest", "caller", "recipient", "sender", "mr", "mrs", "ms", "dr", "prof",
    "herr", "frau", "mme", "pan", "pani", "sr", "sra",
)  # fmt: skip
CONTEXT = re.compile(rf"\b(?:{'|'.join(CONTEXT_WORDS)})\b[.:,]?\s*$", re.IGNORECASE)


def _introduced_by(before: str) -> bool:
    """CONTEXT.search(before), after the test every match passes: its word ends the text
    once trailing spaces and one `.`, `:` or `,` are gone (most runs fail it)."""
    tail = before.rstrip()
    if tail[-1:] in (".", ":", ","):
        tail = tail[:-1]
    return tail.casefold().endswith(CONTEXT_WORDS) and CONTEXT.search(before) is not None


PERSON_KEY = re.compile(
    r"(?i)(?:^|[_\-.])(?:name|fullname|full_name|first_name|firstname|last_name|lastname|"
    r"given_name|family_name|surname|display_name|displayname|customer|author|assignee|contact|"
    r"recipient|sender|owner|reporter|requester|reviewer|approver|patient|employee|person|"
    r"passenger|guest|cardholder|holder|signatory|user_name_full)$"
)
NOT_PERSON_KEY = re.compile(
    r"(?i)(?:file|host|tool|function|model|span|service|metric|event|table|column|bucket|"
    r"schema|class|type|app|package|project|repo|branch|tag|key|field|attribute|operation|"
    r"queue|topic|index|database|db|step|stage|task|job|workflow|node|pod|container|image|"
    r"region|zone|company|org|organization|team|product|plan|feature|env|display)[_\-.]?name$"
)


MAX_RUN = 12  # tokens; a longer run of capitals is cut (a name never has more)
STOP_WORDS = 25000  # the most frequent English words; rarer ones are often names themselves


@functools.lru_cache(maxsize=1 << 16)  # the same capitalised words come back in every trace
def _fold(token: str) -> str:
    """Case and accents folded: "Zsófia" and "ZSOFIA" look up as "zsofia"."""
    decomposed = unicodedata.normalize("NFKD", token.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@functools.cache
def _lists() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(given names, surnames, stop-words)."""
    given: set[str] = set()
    data = resources.files("gender_guesser").joinpath("data/nam_dict.txt")
    for line in data.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or len(line) < 4:
            continue
        name = line[3:29].strip()
        for part in name.replace("+", " ").replace("-", " ").split():
            if len(part) > 1:
                given.add(_fold(part))
    surnames: set[str] = set()
    census = resources.files("names")
    for file, target, limit in (
        ("dist.male.first", given, None),
        ("dist.female.first", given, None),
        ("dist.all.last", surnames, 20000),  # by frequency: the rarest are words too
    ):
        lines = census.joinpath(file).read_text().splitlines()
        for line in lines[:limit]:
            if line:
                target.add(_fold(line.split()[0]))
    from wordfreq import top_n_list

    common = {_fold(w) for w in top_n_list("en", STOP_WORDS) if w.isalpha()}
    stop = frozenset(common - given - surnames) | {"the", "and", "of"}
    return frozenset(given), frozenset(surnames), stop


def _is_capitalised(token: str) -> bool:
    """ "Zsófia", "McDonald", "O'Brien", an initial "F." (not "KEY" or "API")."""
    word = token.rstrip(".")
    return word[:1].isupper() and (len(word) == 1 or any(c.islower() for c in word[1:]))


# Capitalised tokens only (uppercase letter first, any script's letters after): the walk below
# never looks at the lowercase words that make up most of a text.
CAPITALISED = regex.compile(
    r"(?<![\p{L}\p{M}'\u2019\-])\p{Lu}[\p{L}\p{M}]*(?:['\u2019\-][\p{L}\p{M}]+)*\.?"
)
GAP = re.compile(rf"^ (?:(?:{'|'.join(sorted(PARTICLES))}) )*$")


def _runs(text: str) -> Iterator[list[regex.Match[str]]]:
    """Runs of capitalised tokens separated by one space (particles such as `van der` may
    stand between them)."""
    run: list[regex.Match[str]] = []
    for match in CAPITALISED.finditer(text):
        token = match.group()
        if not (token[1:2].islower() or _is_capitalised(token)):  # "Ab...": capitalised
            if run:
                yield run
            run = []
            continue
        if run:
            gap = text[run[-1].end() : match.start()]
            if (
                len(run) >= MAX_RUN
                or not (gap == " " or (len(gap) < 24 and GAP.match(gap)))
                or _ends_sentence(run[-1].group())
            ):
                yield run
                run = []
        run.append(match)
    if run:
        yield run


def _ends_sentence(token: str) -> bool:
    """A word of two or more letters with a full stop ("Acme." in "for Acme. Be brief"), not
    an initial ("J.") or a title ("Dr.")."""
    return token.endswith(".") and len(token) > 2 and token[:-1].lower() not in TITLES


def _parts_given(folded: str, given: frozenset[str]) -> bool:
    """A hyphenated given name ("Klaus-Peter", "Anne-Marie") whose parts are known."""
    return "-" in folded and all(part in given for part in folded.split("-") if part)


class NameFinder:
    def __call__(self, text: str) -> Iterator[Span]:
        given, _, stop = _lists()
        for run in _runs(text):
            if len(run) == 1:
                # Most runs: a capitalised word alone, a name only after a context word (a
                # lone title or greeting is trimmed to nothing).
                start = run[0].start()
                if not _introduced_by(text[max(0, start - 24) : start]):
                    continue
            tokens = run
            # Titles, greetings and stop-words at either end are not part of the name; a
            # greeting or a title before it says that what follows is one.
            introduced = False
            while tokens and (
                self._edge_word(tokens[0].group(), stop)
                or tokens[0].group().rstrip(".,").lower() in INTRODUCERS
            ):
                word = tokens[0].group().rstrip(".,").lower()
                introduced = introduced or word in INTRODUCERS or word in TITLES
                tokens = tokens[1:]
            while tokens and (
                self._edge_word(tokens[-1].group(), stop)
                or tokens[-1].group().rstrip(".").lower() in PARTICLES
            ):
                tokens = tokens[:-1]
            if not tokens or len(tokens) > 6:
                continue
            words = [t.group().rstrip(".") for t in tokens]
            folded = [_fold(w) for w in words]
            core = [
                (w, f)
                for w, f in zip(words, folded, strict=True)
                if f not in PARTICLES and len(w) > 1
            ]
            if not core or any(f in stop for _, f in core):
                continue
            start, end = tokens[0].start(), tokens[-1].end()
            if text[end - 1 : end] == "." and len(words[-1]) > 1:
                end -= 1
            before = text[max(0, run[0].start() - 24) : tokens[0].start()]
            if introduced or _introduced_by(before):
                yield start, end
                continue
            if len(core) < 2:
                continue
            known = [f for _, f in core if f in given or _parts_given(f, given)]
            if not known:
                continue
            yield start, end

    @staticmethod
    def _edge_word(token: str, stop: frozenset[str]) -> bool:
        word = token.rstrip(".").lower()
        return word in TITLES or word in SUFFIXES or _fold(word) in stop

    def whole(self, value: str) -> bool:
        """A field named for a person: one to five capitalised tokens, not all stop-words."""
        value = value.strip()
        if not 2 <= len(value) <= 80 or any(c.isdigit() for c in value) or "@" in value:
            return False
        _, _, stop = _lists()
        tokens = TOKEN.findall(value)
        if not 1 <= len(tokens) <= 6 or len("".join(tokens)) < len(value.replace(" ", "")) - 3:
            return False
        names = [t.rstrip(".") for t in tokens if t.rstrip(".").lower() not in PARTICLES]
        if not names or not all(_is_capitalised(t) for t in names):
            return False
        return any(_fold(t) not in stop and t.lower() not in TITLES for t in names)


def key_policy(key: str) -> str | None:
    if NOT_PERSON_KEY.search(key):
        return None
    return "whole" if PERSON_KEY.search(key) else None


def name_detector() -> Detector:
    finder = NameFinder()
    capital = r"[^\x00-\x40\x5b-\x7f]"
    return Detector(
        "person_name",
        "pii",
        # Two capitalised tokens in a row (an initial or particles between them: "J. Smith",
        # "Tom van der Stael"), or a word that introduces a name.
        anchor=(
            rf"{capital}[^\s\d.,;:!?()\[\]{{}}\"]*\.?[ ](?:(?:{'|'.join(sorted(PARTICLES))})[ ])*"
            rf"{capital}|"
            r"(?:[Dd]ear|[Hh]i|[Hh]ello|[Rr]egards|[Nn]ame is|[Tt]hanks|Mr|Mrs|Ms|Dr|Prof)\W"
        ),
        finder=finder,
        whole=finder.whole,
        key_policy=key_policy,
        keep=0,
    )
