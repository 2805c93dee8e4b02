"""What every part of the configuration shares: strict models, sizes, one-line errors.

Below the models of each store kind (`stores/*_config.py`) and `config.py`, which composes them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line an operator should read."""


def read_secret(where: str, env: str | None = None, file: str | None = None) -> str:
    """A secret from an environment variable or a file, read now so that a missing one stops
    start-up (naming `where`, the config key) instead of failing a request later."""
    if env is not None:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"{where}: environment variable {env} is not set")
        return value
    assert file is not None
    try:
        value = Path(file).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {file}: {exc.strerror or exc}") from None
    if not value:
        raise ConfigError(f"{where}: {file} is empty")
    return value


def parse_size(value: int | str) -> int:
    """Accept 1048576, '1MiB', '16 MB', '512k'."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. '16MiB')")
    number, unit = int(match.group(1)), (match.group(2) or "").upper()
    base = 1024 if "I" in unit else 1000
    return number * (base ** "BKMG".index(unit[0]) if unit else 1)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


def check_jsonpath(path: str) -> str:
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext import parse

    if not path.startswith("$"):
        raise ValueError(f"JSONPath {path!r} must start with '$'")
    try:
        parse(path)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise ValueError(f"invalid JSONPath {path!r}: {exc}") from None
    return path


class StoreEndpoint(Strict):
    """Where the store is; the gateway reaches it with its own credentials only."""

    # What a scope of this store kind names; config.py checks every role's scope against it.
    scope_resource: ClassVar[str] = "prefixes"  # the scope setting that must be listed
    scope_resource_words: ClassVar[str] = "key prefixes"
    scope_settings: ClassVar[frozenset[str]] = frozenset()  # other settings a scope may use
    listing_approvals: ClassVar[bool] = False  # whether approvals' max_keys_over applies
    operation_words: ClassVar[str] = "read this store serves"

    endpoint: str
    verify_tls: bool = True

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, endpoint: str) -> str:
        if not re.match(r"^https?://[^/]+$", endpoint.rstrip("/")):
            raise ValueError("must be http(s)://host[:port] with no path")
        return endpoint.rstrip("/")
