from __future__ import annotations

import json

import pytest

from tracegate.config import ScopeConfig
from tracegate.demo.traces import PLANTED_EMAIL, agent_trace, otlp_trace
from tracegate.masking import BodyError, Masker, MaskReport

KEY = b"unit-test-hash-key"


def masker(allow="all", masks=(), key=KEY) -> Masker:
    scope = ScopeConfig(
        operations=["GetObject"], prefixes=["t/"], fields={"allow": allow}, masks=list(masks)
    )
    return Masker(scope, key)


def mask(document, **kwargs):
    report = MaskReport()
    return masker(**kwargs).mask_document(json.loads(json.dumps(document)), report), report


def test_allow_list_drops_everything_not_listed_and_reports_it():
    out, report = mask(
        agent_trace("t1", "team-a"), allow=["$.trace_id", "$.usage.input_tokens", "$.user.id"]
    )
    assert out == {"trace_id": "t1", "usage": {"input_tokens": 1834}, "user": {"id": "u-1842"}}
    assert report.counts["fields.allow"] >= 6
    assert "$.messages" in report.paths["fields.allow"]


def test_allow_list_keeps_selected_list_items_in_order():
    doc = {"spans": [{"name": "a", "x": 1}, {"name": "b", "x": 2}]}
    out, _ = mask(doc, allow=["$.spans[*].name"])
    assert out == {"spans": [{"name": "a"}, {"name": "b"}]}


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("redact", "[REDACTED:email]"),
        ("partial", "****.com"),
    ],
)
def test_mask_actions_replace_the_value(action, expected):
    out, report = mask(
        {"user": {"email": PLANTED_EMAIL}},
        masks=[{"id": "email", "path": "$.user.email", "action": action, "keep": 4}],
    )
    assert out["user"]["email"] == expected
    assert report.counts["email"] == 1 and report.actions["email"] == action


def test_drop_removes_the_field_and_list_items_without_shifting_others():
    doc = {"items": [{"secret": 1, "ok": 1}, {"secret": 2, "ok": 2}], "keep": True}
    out, report = mask(doc, masks=[{"id": "s", "path": "$.items[*].secret", "action": "drop"}])
    assert out == {"items": [{"ok": 1}, {"ok": 2}], "keep": True}
    assert report.counts["s"] == 2


def test_hash_is_a_stable_keyed_pseudonym():
    rule = [{"id": "e", "path": "$.e", "action": "hash"}]
    first, _ = mask({"e": "a@example.com"}, masks=rule)
    again, _ = mask({"e": "a@example.com"}, masks=rule)
    other, _ = mask({"e": "b@example.com"}, masks=rule)
    other_key, _ = mask({"e": "a@example.com"}, masks=rule, key=b"another-key")
    assert first == again
    assert first["e"].startswith("hmac:") and "a@example.com" not in first["e"]
    assert first != other and first != other_key


def test_hash_masks_refuse_to_run_without_a_key():
    with pytest.raises(ValueError, match="hash key"):
        masker(masks=[{"id": "e", "path": "$.e", "action": "hash"}], key=None)


def test_masks_apply_to_whole_subtrees_as_text():
    out, _ = mask(
        {"tool": {"arguments": {"card": "4111"}}},
        masks=[{"id": "args", "path": "$.tool.arguments", "action": "redact"}],
    )
    assert out == {"tool": {"arguments": "[REDACTED:args]"}}


def test_otlp_attributes_can_be_selected_by_key_with_a_filter():
    out, report = mask(
        otlp_trace("abc"),
        masks=[
            {
                "id": "otel-email",
                "path": "$..attributes[?key == 'user.email'].value.stringValue",
                "action": "redact",
            }
        ],
    )
    span = out["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    values = {a["key"]: a["value"].get("stringValue") for a in span["attributes"]}
    assert values["user.email"] == "[REDACTED:otel-email]"
    assert values["gen_ai.request.model"] == "example-model-large"
    assert report.counts["otel-email"] == 1


def test_jsonl_is_masked_line_by_line_and_blank_lines_skipped():
    body = b'{"e": "a@x.io"}\n\n{"e": "b@x.io"}\n'
    report = MaskReport()
    out = masker(masks=[{"id": "e", "path": "$.e", "action": "redact"}]).mask_body(
        body, "jsonl", report
    )
    assert out == b'{"e":"[REDACTED:e]"}\n{"e":"[REDACTED:e]"}\n'
    assert report.documents == 2


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        (b'{"a": ', "json", "body is not valid JSON"),
        (b"\xff\xfe", "json", "body is not valid JSON"),
        (b'{"a": 1}\n{"b": \n', "jsonl", "line 2 is not valid JSON"),
        (b"<xml/>", "xml", "cannot mask content of kind 'xml'"),
    ],
)
def test_bodies_that_are_not_what_they_claim_raise(body, kind, message):
    with pytest.raises(BodyError, match=message):
        masker().mask_body(body, kind, MaskReport())


def test_report_never_holds_values():
    _, report = mask(
        {"user": {"email": PLANTED_EMAIL}},
        masks=[{"id": "email", "path": "$.user.email", "action": "hash"}],
    )
    assert PLANTED_EMAIL not in json.dumps(report.to_dict())
    assert report.to_dict()["rules"]["email"]["paths"] == ["$.user.email"]


DOCUMENTS = [
    agent_trace("t1", "team-a"),
    {"attributes": {"key": "user.email"}, "a": {"attributes": [{"key": "user.email", "value": 1}]}},
    {"l": [{"x": "1"}, {"x": 1}, "x"], "x": {"x": 2}},
    otlp_trace("abc"),
    {"a": {"b": 1}, "l": [{"x": 1}, {"x": 2}, 3], "s": "str", "n": None},
    [{"a": 1}, {"a": {"b": [1, 2]}}],
]
PATHS = [
    "$.user.email",
    "$.messages[*].content",
    "$.messages[2].tool_calls[*].arguments.email",
    "$.messages[*].tool_calls[*].name",
    "$.a[*]",
    "$.a.*",
    "$.l[*].x",
    "$.l.x",
    "$.l[1]",
    "$.l[7]",
    "$.s[*]",
    "$[*].a.b[*]",
    "$.*",
    "$",
    "$..email",
    "$..attributes[?key == 'user.email'].value.stringValue",
    "$..attributes[?(@.key == 'gen_ai.request.model')].value",
    "$..spans[*].attributes[?key == 'nope']",
    "$.l[?x == '1']",
    "$..x",
]


@pytest.mark.parametrize("path", PATHS)
def test_fast_paths_match_exactly_what_jsonpath_ng_finds(path):
    from tracegate.masking.paths import JsonPathExpression, SimplePath, compile_path

    compiled = compile_path(path)
    assert isinstance(compiled, SimplePath)
    reference = JsonPathExpression(path)
    for document in DOCUMENTS:
        assert list(compiled.paths(document)) == list(reference.paths(document))


@pytest.mark.parametrize(
    "path", ["$.a-b", "$['user']", "$.l[0:2]", "$..attributes[?key > 'x']", '$.l[?x == "1"]']
)
def test_other_expressions_go_through_jsonpath_ng(path):
    from tracegate.masking.paths import JsonPathExpression, compile_path

    assert isinstance(compile_path(path), JsonPathExpression)


# -- masked bodies remembered ------------------------------------------------------------


def test_a_body_read_again_is_served_from_memory_with_the_same_report(monkeypatch):
    m = masker()
    body = json.dumps(agent_trace("tr-1", "team-a")).encode()
    first_report, second_report = MaskReport(), MaskReport()
    first = m.mask_body(body, "json", first_report)

    def no_masking(*args, **kwargs):
        raise AssertionError("masked again")

    monkeypatch.setattr(m._text, "mask", no_masking)
    second = m.mask_body(body, "json", second_report)
    assert second == first and PLANTED_EMAIL.encode() not in second
    assert second_report.to_dict() == first_report.to_dict() and first_report.counts
    with pytest.raises(AssertionError, match="masked again"):  # another body is masked anew
        m.mask_body(body.replace(b"}", b' , "x": 1}', 1), "json", MaskReport())


def test_remembered_bodies_belong_to_one_masker():
    body = json.dumps(agent_trace("tr-1", "team-a")).encode()
    plain, narrow = masker(), masker(allow=["$.trace_id"])
    assert plain.mask_body(body, "json", MaskReport()) != narrow.mask_body(
        body, "json", MaskReport()
    )


def test_a_remembered_report_is_added_to_what_the_report_already_holds():
    m = masker()
    body = json.dumps(agent_trace("tr-1", "team-a")).encode()
    alone = MaskReport()
    m.mask_body(body, "json", alone)
    report = MaskReport()
    report.add("earlier", "redact", ("x",))
    report.documents = 1
    m.mask_body(body, "json", report)
    assert report.counts["earlier"] == 1 and report.documents == alone.documents + 1
    assert all(report.counts[rule] == n for rule, n in alone.counts.items())


def test_the_memo_is_bounded_and_skips_large_bodies():
    from tracegate.masking.memo import MAX_BODY, MaskedBodies

    memo = MaskedBodies(max_bytes=10_000, max_entries=2)
    assert MaskedBodies.key(b"x" * (MAX_BODY + 1), "json", None) is None
    keys = [MaskedBodies.key(str(i).encode(), "json", None) for i in range(3)]
    for key in keys:
        memo.put(key, b"masked", MaskReport())
    assert memo.get(keys[0], MaskReport()) is None  # full at two: it started over
    assert memo.get(keys[2], MaskReport()) == b"masked"


@pytest.mark.parametrize(
    "body",
    [
        b'{"n": 123456789012345678901234567890, "t": "x"}',  # past 64 bits: orjson makes a float
        b'{"n": -18446744073709551617}',
        b'{"v": NaN, "w": Infinity, "x": 1e999}',
        b'\xef\xbb\xbf{"a": "b"}',  # a byte order mark
        b'{"f": [1e16, 1e-07, 0.1, -0.0, 2.5e+300], "u": "\\u00e9\\u2028\\n"}',
        b'{"a": 1, "a": 2}',
    ],
)
def test_bodies_read_as_the_standard_library_reads_them(body):
    """orjson reads and writes JSON faster; where it would read another document than the
    standard library (or refuse one it accepts), the standard library reads it."""
    from tracegate.masking import codec

    document, _ = codec.loads(body)
    expected = json.loads(body)
    assert json.dumps(document, sort_keys=True) == json.dumps(expected, sort_keys=True)
    masked = masker().mask_body(body, "json", MaskReport())
    assert json.dumps(json.loads(masked), sort_keys=True) == json.dumps(expected, sort_keys=True)


def test_a_lone_surrogate_is_read_as_the_standard_library_does_then_refused_clearly():
    from tracegate.masking import codec

    body = b'{"s": "\\ud800 lone"}'
    assert codec.loads(body) == ({"s": "\ud800 lone"}, False)
    with pytest.raises(BodyError, match="lone surrogate"):
        masker().mask_body(body, "json", MaskReport())


def test_a_long_number_keeps_every_digit_and_is_still_scanned():
    card = 4111111111111111  # under 64 bits, read by orjson
    body = json.dumps({"card": card, "id": 12345678901234567890123, "ok": 1.5}).encode()
    masked = json.loads(masker().mask_body(body, "json", MaskReport()))
    assert masked["id"] == 12345678901234567890123 and masked["ok"] == 1.5
    assert str(card) not in json.dumps(masked)


def test_twenty_digits_anywhere_send_the_body_to_the_standard_library(monkeypatch):
    from tracegate.masking import codec

    monkeypatch.setattr(codec, "CHUNK", 8)  # the run straddles chunks
    assert codec.loads(b'{"a": "x", "n": 98765432109876543210}')[1] is False
    assert codec.loads(b'{"a": "x", "n": 9876543210987654321}')[1] is True
