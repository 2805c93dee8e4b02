"""Masking evasion by encoding (issue 14, class 1): detectors read a normalised view of every
string (invisible and look-alike characters, Unicode spaces, percent-escapes, base64, JSON
escapes several levels deep), and object keys and long numbers are read too. The checks below
normalise the output independently of the code under test and look for the value there."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
import unicodedata
from urllib.parse import quote, unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracegate.config import ScopeConfig
from tracegate.masking import Masker, MaskReport

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
SPACES = ["\u00a0", "\u2009", "\u202f", "\u3000", "\u2007"]
VALUES = {
    "email": "dana.reyes@acme-mail.io",
    "aws_access_key_id": "AKIAQ3EGRTYUIOPL7KWM",
    "card": "4111 1111 1111 1111",
    "iban": "DE89 3704 0044 0532 0130 00",
    "phone": "+44 20 7946 0958",
    "github_token": "ghp_16C7e42F292c6912E7710c838347Ae178B4a",
}


def canonical(text: str) -> str:
    """An independent normalisation: JSON escapes, percent-escapes and base64 runs decoded,
    NFKC, invisible characters removed, every Unicode space a space."""
    for _ in range(6):
        unescaped = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), text)
        unescaped = unescaped.replace('\\"', '"').replace("\\\\", "\\").replace("\\n", "\n")
        if unescaped == text:
            break
        text = unescaped
    text = unquote(text)
    decoded = []
    for run in re.findall(r"[A-Za-z0-9+/]{16,}={0,2}", text):
        with contextlib.suppress(ValueError):
            decoded.append(base64.b64decode(run + "=" * (-len(run) % 4)).decode("utf-8"))
    text = "\n".join([text, *decoded])
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf" and c != "\u00ad")
    return "".join(" " if unicodedata.category(c) == "Zs" else c for c in text)


def survives(value: str, output: str) -> bool:
    target = canonical(value)
    out = canonical(output)
    return target in out or target.replace(" ", "") in out.replace(" ", "")


@functools.cache
def masker() -> Masker:
    return Masker(ScopeConfig(operations=["GetObject"], prefixes=[""]), b"k")


@st.composite
def disguised(draw):
    kind = draw(st.sampled_from(sorted(VALUES)))
    value = VALUES[kind]
    chars = list(value)
    for _ in range(draw(st.integers(0, 3))):  # invisible characters anywhere inside
        chars.insert(draw(st.integers(1, len(chars) - 1)), draw(st.sampled_from(INVISIBLE)))
    text = "".join(chars)
    if draw(st.booleans()):  # look-alike digits
        text = "".join(
            chr(ord(c) + 0xFEE0) if c.isdigit() and draw(st.booleans()) else c for c in text
        )
    if draw(st.booleans()):  # other spaces
        text = text.replace(" ", draw(st.sampled_from(SPACES)))
    carrier = f"the value is {text} here"
    encoding = draw(st.sampled_from(["plain", "percent", "base64", "json1", "json3"]))
    if encoding == "percent":
        carrier = quote(carrier, safe=" ")
    elif encoding == "base64":
        carrier = "blob " + base64.b64encode(carrier.encode()).decode() + " end"
    elif encoding.startswith("json"):
        for _ in range(int(encoding[-1])):
            carrier = json.dumps({"text": carrier})
    return value, carrier


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(disguised())
def test_no_normalised_form_of_a_disguised_value_survives(case):
    value, carrier = case
    out = masker().mask_document({"message": carrier}, MaskReport())
    assert not survives(value, json.dumps(out, ensure_ascii=False)), (carrier, out)


def test_keys_and_numbers_are_read_and_the_report_says_where():
    report = MaskReport()
    out = masker().mask_document(
        {"by_user": {"dana.reyes@acme-mail.io": {"n": 1}}, "pan": 4111111111111111}, report
    )
    assert out == {"by_user": {"[REDACTED:EMAIL]": {"n": 1}}, "pan": "[REDACTED:CARD]"}
    assert report.paths["detect.email"] == ["$.by_user.<key>"]  # not the key itself
    assert report.paths["detect.card"] == ["$.pan.<number>"]


ENCODED_OBJECT = {
    "a": "mail dana.reyes\u200b@acme-mail.io now",
    "b": "key AKIA\u2060Q3EGRTYUIOPL7KWM used",
    "c": "card \uff14\uff11\uff11\uff11 1111 1111 1111",
    "d": "iban DE89\u00a03704\u20090044\u00a00532\u00a00130\u00a000",
    "e": "write to dana.reyes%40acme-mail.io or %41KIAQ3EGRTYUIOPL7KWM",
    "f": "cfg "
    + base64.b64encode(b"aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE1").decode(),
    "g": json.dumps(json.dumps(json.dumps({"to": "dana.reyes\\u0040acme-mail.io"}))),
    "dana.reyes@acme-mail.io": "as a key",
    "pan": 4111111111111111,
}


@pytest.fixture(scope="module")
def encoded_key(store):
    store.client().put_object(
        Bucket="traces",
        Key="traces/team-a/encoded.json",
        Body=json.dumps(ENCODED_OBJECT).encode(),
        ContentType="application/json",
    )
    return "/traces/traces/team-a/encoded.json"


def test_encoded_values_are_masked_through_a_real_gateway(make_gateway, issuer, encoded_key):
    gateway = make_gateway()
    token = issuer.token("carol", ["support-engineers"])
    response = httpx.get(gateway.url + encoded_key, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    text = response.text
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLE1"
    for value in [*(VALUES[k] for k in ("email", "aws_access_key_id", "card", "iban")), secret]:
        assert not survives(value, text), value
    assert '"pan":"****1111"' in text.replace(" ", "")  # the example's `card: partial`
