"""What detectors read: a normalised view of a string, with the way back to the original.

Values hide from patterns behind encodings: JSON escapes of text that holds JSON (`\\n`,
`\\u0040`, several levels deep), invisible format characters inside a value (zero-width space,
word joiner, BOM, soft hyphen), look-alike characters (fullwidth digits, mathematical letters:
NFKC), Unicode spaces and dashes used as separators, percent-escapes (`%40`), and base64 of
text. The view undoes each of these; every character of the view knows the range of original
characters it came from, so a finding in the view masks exactly the original characters
(invisible ones in between included). Base64 runs that decode to text are appended to the
view, each decoded character standing for its whole run, so both the run and what it says are
read.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import re
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

# (view start, view end, original start, original end, identity): an identity segment maps
# character for character, any other maps each of its view characters to the whole range.
Segment = tuple[int, int, int, int, bool]

_JSON_ESCAPE = re.compile(
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|[\"\\/bfnrt])"
)
_SIMPLE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_UNICODE = re.compile(
    "[\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180b-\u180f\u2000-\u2015"
    "\u2028-\u202f\u205f-\u206f\u2212\u2800\u3000\u3164\ufe58\ufe63\ufeff\uff01-\uff5e"
    "\uffa0\U0001d400-\U0001d7ff\U000e0000-\U000e007f]"
)
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/._-])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=._-])")
MAX_JSON_LEVELS = 4
MAX_BASE64_RUNS = 16


def _unicode_replacement(char: str) -> str:
    category = unicodedata.category(char)
    if category == "Cf" or char in "\u115f\u1160\u3164\uffa0\u2800\u034f\u180b\u180c\u180d\u180f":
        return ""  # invisible: zero-width, joiners, BOM, soft hyphen, tags, fillers
    if category == "Zs" or char in "\u2028\u2029":
        return " "
    if category == "Pd" or char in "\u2212\ufe63":
        return "-"
    return unicodedata.normalize("NFKC", char)


@dataclass
class View:
    """A transformed text and, through `segments`, where each of its characters came from."""

    text: str
    segments: list[Segment]
    parent: View | None = None
    _starts: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._starts = [s[0] for s in self.segments]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The range of the original string that view characters [start, end) came from."""
        lo, hi = self._map(start, end)
        return self.parent.original_span(lo, hi) if self.parent is not None else (lo, hi)

    def _map(self, start: int, end: int) -> tuple[int, int]:
        first = self.segments[bisect.bisect_right(self._starts, start) - 1]
        last = self.segments[bisect.bisect_right(self._starts, max(start, end - 1)) - 1]
        lo = first[2] + (start - first[0]) if first[4] else first[2]
        hi = last[2] + (end - last[0]) if last[4] else last[3]
        return lo, max(lo, hi)


def _rewrite(text: str, pattern: re.Pattern[str], replace, parent: View | None) -> View | None:
    """A view with every match of `pattern` replaced by `replace(match)` (None: keep it)."""
    pieces: list[str] = []
    segments: list[Segment] = []
    cursor = 0
    view_at = 0
    changed = False
    for match in pattern.finditer(text):
        replacement = replace(match)
        if replacement is None:
            continue
        start, end = match.span()
        if start > cursor:
            pieces.append(text[cursor:start])
            segments.append((view_at, view_at + start - cursor, cursor, start, True))
            view_at += start - cursor
        if replacement:
            pieces.append(replacement)
            segments.append((view_at, view_at + len(replacement), start, end, False))
            view_at += len(replacement)
        # A removed character leaves no segment: a finding around it spans it anyway.
        cursor = end
        changed = True
    if not changed:
        return None
    if cursor < len(text):
        pieces.append(text[cursor:])
        segments.append((view_at, view_at + len(text) - cursor, cursor, len(text), True))
        view_at += len(text) - cursor
    if not segments:
        segments.append((0, 0, 0, len(text), False))  # everything was removed
    return View("".join(pieces), segments, parent)


def _json_unescape(match: re.Match[str]) -> str | None:
    code = match.group()[1:]
    if code[0] != "u":
        return _SIMPLE[code]
    if len(code) == 11:  # a surrogate pair
        high, low = int(code[1:5], 16), int(code[7:11], 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    char = chr(int(code[1:], 16))
    return None if 0xD800 <= ord(char) <= 0xDFFF else char


def _percent_decode(match: re.Match[str]) -> str | None:
    try:
        decoded = unquote_to_bytes(match.group()).decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Invisible and space characters are decoded too (the next step folds them).
    return None if any(unicodedata.category(c) == "Cc" for c in decoded) else decoded


def _unicode(match: re.Match[str]) -> str | None:
    replacement = _unicode_replacement(match.group())
    return None if replacement == match.group() else replacement


@functools.lru_cache(maxsize=8192)  # trace and span ids come back in every span of a trace
def _base64_text(run: str) -> str | None:
    if len(run) % 4:
        return None
    try:
        decoded = base64.b64decode(run, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t\r" for c in decoded):
        return None
    letters = sum(c.isalnum() or c in " =:_-.@/+" for c in decoded)
    if letters < 0.8 * len(decoded):
        return None
    inner = normalised(decoded, base64_runs=False)  # what it says, normalised in its turn
    return inner.text if inner else decoded


def normalised(text: str, base64_runs: bool = True) -> View | None:
    """The view detectors should read, or None when the text is already what they see."""
    view: View | None = None
    current = text
    for _ in range(MAX_JSON_LEVELS):
        if "\\" not in current:
            break
        step = _rewrite(current, _JSON_ESCAPE, _json_unescape, view)
        if step is None:
            break
        view, current = step, step.text
    if "%" in current:
        step = _rewrite(current, _PERCENT, _percent_decode, view)
        if step is not None:
            view, current = step, step.text
    if not current.isascii() and _UNICODE.search(current):
        step = _rewrite(current, _UNICODE, _unicode, view)
        if step is not None:
            view, current = step, step.text
    decoded = []
    for match in _BASE64.finditer(current) if base64_runs else ():
        text_of = _base64_text(match.group())
        if text_of:
            decoded.append((match.span(), text_of))
            if len(decoded) >= MAX_BASE64_RUNS:
                break
    if decoded:
        view = _append(current, decoded, view)
    return view


def _append(current: str, decoded: list[tuple[tuple[int, int], str]], parent: View | None) -> View:
    """The text, then each decoded base64 run on its own line, standing for the whole run."""
    pieces = [current]
    segments: list[Segment] = [(0, len(current), 0, len(current), True)]
    at = len(current)
    for (start, end), text_of in decoded:
        pieces.append("\n" + text_of)
        segments.append((at, at + 1 + len(text_of), start, end, False))
        at += 1 + len(text_of)
    return View("".join(pieces), segments, parent)
