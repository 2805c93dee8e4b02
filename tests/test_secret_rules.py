"""The provider secret rules are data with their own examples: every example is found, every
negative is not, through the same scanner (hyperscan prefilter, then the exact pattern)."""

from __future__ import annotations

import random

import pytest

from tracegate.detectors.rules import (
    RuleFileError,
    expand,
    load_rule_file,
    provider_rules,
    to_detector,
)
from tracegate.detectors.scanner import Scanner

RULES = provider_rules()


def test_the_rules_cover_at_least_100_providers_formats():
    assert len(RULES) >= 100
    assert len({rule.provider for rule in RULES}) >= 80


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_example_is_found_and_every_negative_is_not(rule):
    detector = to_detector(rule)
    rng = random.Random(rule.id)
    for engine in (True, False):
        scanner = Scanner([detector], use_hyperscan=engine)
        for template in rule.examples:
            for _ in range(3):
                example = expand(template, rng)
                assert scanner.scan([f"see {example} here"]), (rule.id, example)
        for template in rule.negatives:
            negative = expand(template, rng)
            assert not scanner.scan([f"see {negative} here"]), (rule.id, negative)


def test_a_rule_file_with_an_unknown_key_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "rules:\n  - id: x\n    provider: X\n    pattern: 'x'\n    examples: [x]\n"
        "    negatives: [y]\n    prefixs: [z]\n"
    )
    with pytest.raises(RuleFileError, match=r"bad\.yaml: rules\.0\.prefixs: Extra inputs"):
        load_rule_file(path)


def test_a_rule_whose_pattern_does_not_compile_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "rules:\n  - id: x\n    provider: X\n    pattern: '(unclosed'\n    examples: [x]\n"
        "    negatives: [y]\n"
    )
    with pytest.raises(RuleFileError, match=r"rules\.0\.pattern: .*not a valid regular"):
        load_rule_file(path)
