"""Each detector on its own: real values found, look-alikes left alone; and how findings apply."""

from __future__ import annotations

import json

import pytest

from tests.corpus import build_corpus
from tracegate.config import DetectorPolicy, ScopeConfig
from tracegate.detectors import ALL, BY_NAME
from tracegate.detectors.scanner import Scanner
from tracegate.masking import Masker, MaskReport

FOUND = {
    "aws_access_key_id": ["key AKIAQ3EGRTYUIOPL7KWM here", "ASIAY34FZKBOKMUTVV7A"],
    "aws_secret_access_key": ["aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKE"],
    "github_token": ["token ghp_16C7e42F292c6912E7710c838347Ae178B4a ok"],
    "gitlab_token": ["glpat-xF3vQ9zN2mK8pL5wR7tY"],
    "slack_token": ["xoxb-263594206564-2343594206574-FGqddMF8t3cLOYdbhBpVSvJG"],
    "slack_webhook": [
        "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/XXXXXXXXXXXXXXXXXXXXXXXX"
    ],
    "stripe_key": ["sk_live_4eC39HqLyjWDarjtT1zdp7dc"],
    "anthropic_api_key": ["sk-ant-api03-" + "a1B2c3D4" * 12 + "AA"],
    "openai_api_key": ["sk-proj-" + "Ab1_Cd2-" * 8 + "T3BlbkFJ" + "xY9z" * 10],
    "google_api_key": ["AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"],
    "jwt": [
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    ],
    "private_key": ["-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"],
    "url_password": ["postgres://app:s3cr3tPW@db.internal:5432/traces"],
    "secret_assignment": ['password="Tr0ub4dor&3"', "client_secret: 9f8e7d6c5b4aQ"],
    "high_entropy_secret": ["the staging credential is Zq8vN2mR7tY4wK1pL9sX3cB6hJ5gF0dA"],
    "email": ["write to dana.reyes@acme.io today"],
    "phone": ["call +44 20 7946 0958", "call (415) 867-5309 now", "+49 30 12345678"],
    "card": ["card 4111 1111 1111 1111", "5555555555554444", "378282246310005"],
    "iban": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
    "ssn": ["ssn 123-45-6789"],
    "ipv4": ["from 192.168.10.24 at night", "8.8.8.8"],
    "ipv6": ["addr 2001:db8:85a3::8a2e:370:7334", "fe80::1ff:fe23:4567:890a"],
}
LEFT_ALONE = [
    "trace 123e4567-e89b-12d3-a456-426614174000",
    "commit e83c5163316f89bfbde7d9ab23ca2e25604af290 (short e83c516)",
    "at 2026-11-20T09:14:03Z, 2026-11-20 09:14:03, epoch 1795794382",
    "upgraded to v2.14.1, python 3.12.1, release 1.2.3.4",
    "order ORD-20261120-000123 and invoice #48213",
    "reference 1234567812345678 fails Luhn",
    "see user@example.com or you@example.org for the format",
    "AKIAXXXXXXXXXXXXXXXX and AKIAIOSFODNN7EXAMPLE from the docs",
    "password=<your-password> token=${TOKEN} api_key: YOUR_API_KEY",
    "max_tokens=4096, temperature=0.2, 429 Too Many Requests",
    "ssn-like 000-12-3456 and 666-45-6789 are invalid",
    "token_type: Bearer",
    "std::vector<int> and 09:14:03",
]


def findings(text: str, detectors=ALL):
    return [(f.detector.name, text[f.start : f.end]) for f in Scanner(detectors).scan([text])]


@pytest.mark.parametrize(
    ("name", "text"), [(name, text) for name, texts in FOUND.items() for text in texts]
)
def test_detector_finds_real_values(name, text):
    assert name in {found for found, _ in findings(text, [BY_NAME[name]])}


@pytest.mark.parametrize("text", LEFT_ALONE)
def test_look_alikes_are_left_alone(text):
    assert findings(text) == []


def test_hyperscan_and_re_engines_find_the_same():
    corpus = build_corpus(per_kind=10)
    texts = []
    for _, document in corpus.documents:
        texts.extend(_strings(document))
    fast, slow = Scanner(ALL), Scanner(ALL, use_hyperscan=False)
    assert fast.engine == "hyperscan" and slow.engine == "re"
    as_tuples = lambda fs: sorted((f.text_index, f.start, f.end, f.detector.name) for f in fs)  # noqa: E731
    assert as_tuples(fast.scan(texts)) == as_tuples(slow.scan(texts))


def test_strings_with_nul_bytes_are_still_scanned():
    texts = ["a\x00b dana@acme.io", "clean", "x AKIAQ3EGRTYUIOPL7KWM"]
    names = {(f.text_index, f.detector.name) for f in Scanner(ALL).scan(texts)}
    assert names == {(0, "email"), (2, "aws_access_key_id")}


def masker(**detectors) -> Masker:
    scope = ScopeConfig(operations=["GetObject"], prefixes=[""], detectors=detectors)
    return Masker(scope, b"detector-test-key")


def mask(document, **detectors):
    report = MaskReport()
    return masker(**detectors).mask_document(json.loads(json.dumps(document)), report), report


def test_json_inside_strings_is_masked_and_stays_valid_json():
    arguments = json.dumps(
        {"email": "dana@acme.io", "nested": json.dumps({"k": "AKIAQ3EGRTYUIOPL7KWM"})}
    )
    untouched = json.dumps({"city": "Paris"}, indent=2)
    out, report = mask({"arguments": arguments, "other": untouched})
    inner = json.loads(out["arguments"])
    assert inner["email"] == "[REDACTED:EMAIL]"
    assert json.loads(inner["nested"]) == {"k": "[REDACTED:AWS_ACCESS_KEY_ID]"}
    assert out["other"] == untouched  # unchanged JSON keeps its exact text
    assert "$.arguments.<json>.email" in report.paths["detect.email"]


@pytest.mark.parametrize(
    "inner",
    [
        # Escapes that would hide a value from a probe of the raw text, each undone first.
        '{"note": "key \\u0041KIAQ3EGRTYUIOPL7KWM here"}',
        '{"note": "line one\\npassword=Sup3rS3cretValue!"}',
        '{"note": "see https:\\/\\/admin:hunter2pass@db.example.com\\/x"}',
        '{"note": "\\u0064ana@acme.io"}',
        # Judged by its key alone: no anchor in the text, found by the key-name probe.
        '{"session_token": "q8Zr2LmP0vXw"}',
        '{"db": {"Client-Secret": "q8Zr2LmP0vXw"}}',
    ],
)
def test_json_inside_strings_is_opened_whenever_a_value_inside_could_match(inner):
    out, report = mask({"span": {"tool_result": inner}})  # nested: probed, not parsed at once
    assert out["span"]["tool_result"] != inner, report.to_dict()
    assert json.loads(out["span"]["tool_result"])  # still valid JSON
    assert any(rule.startswith("detect.") for rule in report.counts)


def test_json_inside_strings_without_findings_keeps_its_exact_text():
    inner = '{"note":"caf\\u00e9 at 10:00:00, order 4471","ok":true}'
    doc = {"span": {"tool_result": inner, "n": [inner] * 3}}
    out, report = mask(doc)
    assert out == doc and not report.counts


def test_large_lists_are_masked_in_batches_with_exact_paths():
    traces = [{"id": n, "text": f"reach me at user{n}@acme.io"} for n in range(20000)]
    doc = {"title": "mail boss@acme.io", "traces": traces, "tail": {"x": "ops@acme.io"}}
    out, report = mask(doc)
    assert out["title"] == "mail [REDACTED:EMAIL]" and out["tail"] == {"x": "[REDACTED:EMAIL]"}
    assert all(t["text"] == "reach me at [REDACTED:EMAIL]" for t in out["traces"])
    assert [t["id"] for t in out["traces"]] == list(range(20000))
    assert report.counts["detect.email"] == 20002
    paths = report.paths["detect.email"]
    assert "$.title" in paths and "$.traces[0].text" in paths


def test_drops_inside_batched_list_items_never_shift_other_items():
    doc = [{"a": "x", "b": f"n{n} dana@acme.io"} if n % 2 else {"a": "keep"} for n in range(9000)]
    out, _ = mask(doc, actions={"email": "drop"})
    assert out == [{"a": "x"} if n % 2 else {"a": "keep"} for n in range(9000)]


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("redact", "mail [REDACTED:EMAIL] now"),
        ("partial", "mail ****@acme.io now"),
    ],
)
def test_actions_on_findings_in_text(action, expected):
    out, _ = mask({"t": "mail dana@acme.io now"}, actions={"email": action})
    assert out["t"] == expected


def test_hash_gives_a_stable_typed_pseudonym():
    first, _ = mask({"t": "a dana@acme.io"}, actions={"email": "hash"})
    second, _ = mask({"t": "b dana@acme.io"}, actions={"pii": "hash"})
    assert first["t"].startswith("a [EMAIL:") and first["t"][2:] == second["t"][2:]


def test_drop_removes_the_whole_field_or_list_item():
    out, report = mask(
        {"keep": "fine", "gone": "call +44 20 7946 0958", "items": ["ok", "8.8.8.8", "ok2"]},
        actions={"pii": "drop"},
    )
    assert out == {"keep": "fine", "items": ["ok", "ok2"]}
    assert report.counts["detect.phone"] == 1 and report.counts["detect.ipv4"] == 1


def test_partial_keeps_the_last_digits_of_cards():
    out, _ = mask({"t": "card 4111 1111 1111 1111"}, actions={"card": "partial"})
    assert out["t"] == "card ****1111"


def test_values_under_credential_keys_are_judged_whole():
    out, _ = mask({"password": "Tr0ub4dor&3x", "token_type": "Bearer", "tokenizer": "o200k_base"})
    assert out == {
        "password": "[REDACTED:SECRET_ASSIGNMENT]",
        "token_type": "Bearer",
        "tokenizer": "o200k_base",
    }


def test_secrets_win_over_personal_data_on_overlap():
    out, _ = mask({"t": "postgres://dana:p4ssw0rdXY@10.0.0.5/db"})
    assert "p4ssw0rdXY" not in out["t"] and "[REDACTED:URL_PASSWORD]" in out["t"]


def test_only_selected_groups_run_but_secrets_always_do():
    out, _ = mask({"t": "dana@acme.io AKIAQ3EGRTYUIOPL7KWM"}, run=["phone"])
    assert out["t"] == "dana@acme.io [REDACTED:AWS_ACCESS_KEY_ID]"
    revealed, _ = mask({"t": "dana@acme.io AKIAQ3EGRTYUIOPL7KWM"}, run=[], reveal_secrets=True)
    assert revealed["t"] == "dana@acme.io AKIAQ3EGRTYUIOPL7KWM"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"actions": {"github_token": "partial"}}, "secrets can only be redacted or dropped"),
        ({"actions": {"secrets": "hash"}}, "secrets can only be redacted or dropped"),
        ({"run": ["emails"]}, "unknown detector or group 'emails'"),
    ],
)
def test_detector_policy_is_validated(policy, message):
    with pytest.raises(ValueError, match=message):
        DetectorPolicy(**policy)


def test_reports_count_types_and_paths_never_values():
    _, report = mask({"a": ["x dana@acme.io", "y bob@acme.io"], "b": {"c": "8.8.8.8"}})
    data = report.to_dict()["rules"]
    assert data["detect.email"]["count"] == 2
    assert data["detect.email"]["paths"] == ["$.a[0]", "$.a[1]"]
    assert "acme.io" not in json.dumps(data)


def _strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_otlp_bytes_values_are_decoded_masked_and_re_encoded():
    import base64

    attributes = [
        {"key": "note", "value": {"bytesValue": b64(b"mail dana@acme.io now")}},
        {"key": "blob", "value": {"bytesValue": b64(bytes(range(256)))}},
    ]
    out, report = mask({"attributes": attributes})
    decoded = base64.b64decode(out["attributes"][0]["value"]["bytesValue"]).decode()
    assert decoded == "mail [REDACTED:EMAIL] now"
    assert out["attributes"][1] == attributes[1]  # binary data is left as it is
    assert report.counts["detect.email"] == 1


def test_base64_of_text_in_an_ordinary_string_is_read_and_the_whole_run_masked():
    hidden = b64(b"mail dana@acme.io now")
    out, report = mask({"payload": f"blob {hidden} end"})
    assert out["payload"] == "blob [REDACTED:EMAIL] end"
    assert report.counts["detect.email"] == 1


def test_base64_of_binary_data_is_left_alone():
    blob = b64(bytes(range(48)))
    out, _ = mask({"payload": f"blob {blob} end"})
    assert out["payload"] == f"blob {blob} end"


def test_the_findings_cache_gives_the_same_masks_on_a_second_read():
    document = {
        "a": "mail dana@acme.io",
        "b": ["call +44 20 7946 0958", "key AKIAQ3EGRTYUIOPL7KWM"],
    }
    m = masker()
    first_report, second_report = MaskReport(), MaskReport()
    first = m.mask_document(json.loads(json.dumps(document)), first_report)
    assert m._text.scanner.cache.get("mail dana@acme.io") is not None  # kept across bodies
    second = m.mask_document(json.loads(json.dumps(document)), second_report)
    assert first == second and first_report.counts == second_report.counts
    assert "dana@acme.io" not in json.dumps(second)


def test_street_words_are_found_where_one_regex_over_the_text_finds_them():
    import re

    from tracegate.detectors.addresses import SUFFIX_TRIE, WORD_TRIE, street_spots

    reference = re.compile(
        rf"(?i)(?<![^\W\d_])(?:(?:{WORD_TRIE})|[^\W\d_]*(?:{SUFFIX_TRIE}))(?![^\W\d_])"
    )
    texts = [
        "Hauptstr. 5, 10115 Berlin",
        "Hauptstr.x 5 and STREET 12, 12 Main St., Kossuth Lajos utca 12",
        "ul. Marszałkowska 1; Rua Augusta 100; Pº de la Castellana 5; Calle_Mayor 3; st5",
        "Lindenallee 4, Keizersgracht 12, Storgatan 1, Vodičkova 3, Königsweg 9a",
    ]

    def strings(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from strings(value)
        elif isinstance(node, list):
            for value in node:
                yield from strings(value)

    corpus = build_corpus(per_kind=10)
    texts += [t for _, doc in corpus.documents for t in strings(doc)]
    for text in texts:
        assert street_spots(text) == [m.start() for m in reference.finditer(text)], text


def test_address_windows_open_only_where_a_street_line_could_stand():
    from tracegate.detectors.addresses import _windows

    # Letters inside ids and hex, and number pairs with no town after them, open nothing.
    assert _windows("span 4c3f9a21bd 7r2 took 12 345 ms, 3 c_4 1 r2d2") == []
    assert _windows("ship to 12 High Street today") != []
    assert _windows("Hauptstraße 5, 10115 Berlin") != []
    assert _windows("Musterweg 12, 10115 Berlin") != []
    assert _windows("c/ Mayor 5, 28013 Madrid") != []


def test_scanners_with_the_same_anchors_compile_them_once_and_find_the_same(monkeypatch):
    from tracegate.detectors import scanner

    compiled = []
    real = scanner.compile_database
    monkeypatch.setattr(scanner, "_COMPILED", {})
    monkeypatch.setattr(
        scanner, "compile_database", lambda e, f: compiled.append(len(e)) or real(e, f)
    )
    first, second = Scanner(ALL), Scanner(ALL)  # two scopes, or a config reload
    assert len(compiled) == 1
    texts = ["mail dana@acme.io or call +44 20 7946 0958", "nothing here"]
    found = [[(f.text_index, f.start, f.end, f.detector.name) for f in s.scan(texts)]
             for s in (first, second)]  # fmt: skip
    assert found[0] == found[1] and found[0]
    assert first._db is not second._db  # each its own database and scratch space


def _realistic_texts() -> list[str]:
    from tests.corpus import realistic_export

    texts = [t for _, doc in build_corpus(per_kind=20).documents for t in _strings(doc)]
    for seed in range(12):
        texts += list(_strings(realistic_export(9_000, seed=500 + seed)))
    return texts


@pytest.mark.parametrize("engine", ["hyperscan", "re"])
def test_every_finding_lies_in_a_text_its_anchor_selects(engine):
    """The anchors are only a prefilter: sharpening one (cards, SSNs, phones) must never
    hide a value its finder would report. Every finder runs here on every text, unfiltered."""
    from tracegate.detectors.views import normalised

    texts = list(dict.fromkeys(_realistic_texts()))
    read = [view.text if (view := normalised(t)) else t for t in texts]
    pii = [d for d in ALL if d.group == "pii"]
    scanner = Scanner(pii, use_hyperscan=engine == "hyperscan")
    selected = scanner._candidates(read)
    missed = [
        (d.name, text)
        for index, text in enumerate(read)
        for number, d in enumerate(pii)
        if (index, number) not in selected and next(iter(d.find(text)), None) is not None
    ]
    assert missed == []


def test_phone_regions_are_skipped_only_for_numbers_phonenumbers_rejects_there():
    import random

    import faker

    from tracegate.detectors import phones

    finder = phones.PhoneFinder()
    numbers = set()
    locales = "en_US en_GB fr_FR de_DE it_IT es_ES nl_NL de_AT pl_PL sv_SE ja_JP en_AU en_IN"
    for locale in [*locales.split(), "pt_BR", "es_MX", "en_IE"]:
        fake = faker.Faker(locale)
        fake.seed_instance(11)
        numbers |= {"".join(c for c in fake.phone_number() if c.isdigit()) for _ in range(40)}
    rng = random.Random(5)
    for _ in range(600):
        prefix = rng.choice(["", "0", "00", "011", "0011", "010", "1", "39", "44", "55"])
        numbers.add(prefix + "".join(rng.choice("0123456789") for _ in range(rng.randrange(6, 13))))
    for digits in (n for n in numbers if 7 <= len(n) <= 15):
        for region in finder.regions:
            if phones._is_valid(digits, region):
                assert finder._shapes[region](digits), (digits, region)


def test_a_lone_capitalised_word_is_a_name_only_after_a_context_word():
    import random

    from tracegate.detectors import names

    rng = random.Random(3)
    words = [*names.CONTEXT_WORDS, "Japan", "pan.", "Dear:", "DEAR", "\u017fsn", "ok", "x,", "."]
    for _ in range(3000):
        before = "".join(rng.choice(words) + rng.choice([" ", "  ", ", ", ": ", "\n", ""])
                         for _ in range(rng.randrange(0, 4)))  # fmt: skip
        before = before[-24:]
        assert names._introduced_by(before) == bool(names.CONTEXT.search(before)), before
