"""Secret rules as data: `rules/*.yaml` beside this module, one entry per provider format.

Each rule carries its own positive examples (templates with random parts) and negative
examples; `tests/test_secret_rules.py` runs them all. Loading validates every rule (pattern
compiles in Python `re` and, as the prefilter anchor, in hyperscan; the validator exists), and
any problem names the file and the key.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tracegate.detectors.base import Detector, shannon_entropy
from tracegate.detectors.validators import is_assigned_secret, valid_aws_key_id

RULES_DIR = Path(__file__).with_name("rules")
PLACEHOLDER_VALUE = re.compile(
    r"^(?:<[^>]*>|\$\{[^}]*\}|\{\{[^}]*\}\}|x+|X+|\*+|\.+|(?:your|my)[-_]?\w*|changeme|example\w*)$",
    re.IGNORECASE,
)
TEMPLATE = re.compile(r"\{(\w+):(\d+)\}")
ALPHABETS = {
    "alnum": string.ascii_letters + string.digits,
    "alpha": string.ascii_letters,
    "lower": string.ascii_lowercase,
    "upper": string.ascii_uppercase,
    "digits": string.digits,
    "hex": "0123456789abcdef",
    "HEX": "0123456789ABCDEF",
    "b64": string.ascii_letters + string.digits + "+/",
    "urlsafe": string.ascii_letters + string.digits + "-_",
    "base32": "abcdefghijklmnopqrstuvwxyz234567",
    "bech32": "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L",
    "lowalnum": string.ascii_lowercase + string.digits,
    "upalnum": "ABCDEFGHJKLMNPQRSTUVWXYZ234567",
}


class RuleFileError(ValueError):
    """A rule file that cannot be loaded: the message names the file and the key."""


class SecretRule(BaseModel):
    """One provider's token format."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    provider: str
    pattern: str
    anchor: str | None = None  # the prefilter, when `pattern` uses what hyperscan lacks
    validator: Literal["entropy", "aws_key_id", "assigned"] | None = None
    entropy: float = 3.0
    keep: int = 4
    examples: list[str] = Field(min_length=1)
    negatives: list[str] = Field(min_length=1)

    @field_validator("pattern", "anchor")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[SecretRule]


def expand(template: str, rng: random.Random) -> str:
    """An example from a template: each {class:N} becomes N random characters of the class."""
    return TEMPLATE.sub(lambda m: "".join(rng.choices(ALPHABETS[m[1]], k=int(m[2]))), template)


def _validator(rule: SecretRule) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        if PLACEHOLDER_VALUE.match(value) or len(set(value)) < 5:
            return False
        if rule.validator == "entropy":
            return shannon_entropy(value) >= rule.entropy
        if rule.validator == "aws_key_id":
            return valid_aws_key_id(value)
        if rule.validator == "assigned":
            return is_assigned_secret(value)
        return True

    return check


def to_detector(rule: SecretRule) -> Detector:
    return Detector(
        rule.id,
        "secrets",
        anchor=rule.anchor or rule.pattern,
        pattern=re.compile(rule.pattern),
        validate=_validator(rule),
        keep=rule.keep,
        provider=rule.provider,
    )


def load_rule_file(path: Path) -> list[SecretRule]:
    try:
        data = yaml.safe_load(path.read_text())
        rules = RuleFile.model_validate(data).rules
    except yaml.YAMLError as exc:
        raise RuleFileError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise RuleFileError(f"{path}: {where}: {error['msg']}") from None
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise RuleFileError(f"{path}: rules: duplicate id {rule.id!r}")
        seen.add(rule.id)
    return rules


@cache
def provider_rules() -> tuple[SecretRule, ...]:
    """Every rule of every file in `rules/`, in file order."""
    rules: list[SecretRule] = []
    for path in sorted(RULES_DIR.glob("*.yaml")):
        rules.extend(load_rule_file(path))
    return tuple(rules)
