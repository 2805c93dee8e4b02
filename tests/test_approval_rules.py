"""Which requests an approval rule holds, and how bad approval config is reported."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tracegate.approvals import request_need, response_need
from tracegate.approvals.rules import beyond_scope
from tracegate.config import ConfigError, ScopeConfig, load_config
from tracegate.masking import MaskReport
from tracegate.stores.s3 import Access

EXAMPLE = Path(__file__).resolve().parent.parent / "rules" / "example.yaml"
NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NIGHT = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
APPROVERS = {"roles": ["security"]}


def scope(*approvals: dict) -> ScopeConfig:
    return ScopeConfig.model_validate(
        {
            "operations": ["GetObject", "ListObjectsV2"],
            "prefixes": ["traces/a/"],
            "approvals": [{"approvers": APPROVERS, **a} for a in approvals],
        }
    )


def get(key: str) -> Access:
    return Access("GetObject", "traces", key=key)


def listing(prefix: str) -> Access:
    return Access("ListObjectsV2", "traces", prefix=prefix)


def held(s: ScopeConfig, access: Access, query=(), now=NOON) -> str | None:
    need, _ = request_need(s, access, query, beyond_scope(access, s), now)
    return need.rule.id if need else None


def test_always_holds_every_request():
    assert held(scope({"id": "r", "when": {"always": True}}), get("traces/a/1.json")) == "r"


def test_conditions_must_all_hold():
    s = scope({"id": "r", "when": {"operations": ["GetObject"], "keys": ["traces/a/raw/*"]}})
    assert held(s, get("traces/a/raw/1.json")) == "r"
    assert held(s, get("traces/a/1.json")) is None
    assert held(s, listing("traces/a/raw/")) is None


def test_max_keys_counts_the_s3_default_when_absent():
    s = scope({"id": "bulk", "when": {"max_keys_over": 100}})
    assert held(s, listing("traces/a/")) == "bulk"  # S3 lists up to 1000 by default
    assert held(s, listing("traces/a/"), [("max-keys", "50")]) is None
    assert held(s, listing("traces/a/"), [("max-keys", "101")]) == "bulk"
    assert held(s, get("traces/a/1.json")) is None


def test_outside_hours_wraps_around_midnight():
    day = scope({"id": "night", "when": {"outside_hours": "08:00-18:00"}})
    assert held(day, get("traces/a/1.json"), now=NOON) is None
    assert held(day, get("traces/a/1.json"), now=NIGHT) == "night"
    night_shift = scope({"id": "day", "when": {"outside_hours": "22:00-06:00"}})
    assert held(night_shift, get("traces/a/1.json"), now=NIGHT) is None
    assert held(night_shift, get("traces/a/1.json"), now=NOON) == "day"


def test_beyond_scope_is_admitted_only_by_a_rule_naming_the_wider_prefixes():
    s = scope(
        {"id": "wide", "when": {"beyond_scope_prefixes": ["traces/"]}},
        {"id": "all", "when": {"always": True}},
    )
    assert held(s, get("traces/b/1.json")) == "wide"
    assert held(s, get("traces/a/1.json")) == "all"
    assert held(s, listing("traces/b/")) == "wide"
    assert not beyond_scope(get("other/1.json"), s)
    only_always = scope({"id": "all", "when": {"always": True}})
    assert not beyond_scope(get("traces/b/1.json"), only_always)


def test_the_first_matching_rule_applies():
    s = scope(
        {"id": "first", "when": {"keys": ["traces/a/*"]}},
        {"id": "second", "when": {"always": True}},
    )
    assert held(s, get("traces/a/1.json")) == "first"


def test_response_rules_wait_for_the_masking_report():
    s = scope({"id": "secret", "when": {"detectors": ["secrets"], "response_bytes_over": 10}})
    need, later = request_need(s, get("traces/a/1.json"), (), False, NOON)
    assert need is None and [n.rule.id for n in later] == ["secret"]
    report = MaskReport()
    assert response_need(later, report, 100) is None
    report.add("detect.aws_access_key_id", "redact", ("x",))
    assert response_need(later, report, 5) is None  # too small
    found = response_need(later, report, 100)
    assert found is not None and "aws_access_key_id" in found.why


def write(tmp_path: Path, mutate) -> Path:
    config = yaml.safe_load(EXAMPLE.read_text())
    mutate(config)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def incident(config) -> list:
    return config["roles"]["support"]["scopes"]["incident"]["approvals"]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda c: incident(c)[0].update(approvers={"roles": ["nobody"]}),
            "roles.support.scopes.incident.approvals[0].approvers.roles: role 'nobody' is not "
            "declared",
        ),
        (
            lambda c: incident(c)[3].update(when={}),
            "approvals[3].when: give at least one condition (or always: true)",
        ),
        (
            lambda c: incident(c)[0]["when"].update(detectors=["secrets"]),
            "beyond_scope_prefixes cannot be combined with response conditions",
        ),
        (
            lambda c: incident(c)[1]["when"].update(outside_hours="8-18"),
            "approvals[1].when.outside_hours: expected a UTC window like '08:00-18:00'",
        ),
        (
            lambda c: incident(c)[2]["when"].update(detectors=["aws_secret_key"]),
            "unknown detector or group(s) aws_secret_key",
        ),
        (
            lambda c: incident(c)[3].update(approvers={}),
            "approvals[3].approvers: name at least one approver role or group",
        ),
        (
            lambda c: incident(c)[3].update(requird=2),
            "approvals[3].requird: unknown key",
        ),
        (
            lambda c: incident(c).append(dict(incident(c)[3])),
            "duplicate approval rule id(s): incident-read",
        ),
        (
            lambda c: c["approvals"].update(ui_resume="maybe"),
            "approvals.ui_resume:",
        ),
    ],
)
def test_bad_approval_config_is_one_line_naming_file_and_key(tmp_path, mutate, expected):
    path = write(tmp_path, mutate)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expected in message, message
