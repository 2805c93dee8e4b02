"""Session tokens that carry their own meaning: sealed, bound to their key id, rotatable."""

from __future__ import annotations

import time

import pytest

from tracegate.identity.principal import Principal
from tracegate.identity.session_credentials import (
    CredentialError,
    CredentialSealer,
    parse_keys,
)

CAROL = Principal("carol", "https://idp", "demo", ("support-engineers",))
OLD, NEW = b"o" * 32, b"n" * 32


def mint(sealer: CredentialSealer, expires_in: float = 600):
    return sealer.mint(CAROL, "support", "debugging", time.time() + expires_in, {"tenant": "a"})


def test_a_token_opens_to_the_credentials_it_was_minted_with():
    sealer = CredentialSealer({"k1": OLD})
    credentials, token = mint(sealer)
    opened = sealer.open(credentials.access_key_id, token)
    assert opened == credentials and opened.access_key_id.startswith("ASIA")
    assert len(opened.access_key_id) == 20 and opened.principal().claims == {"tenant": "a"}
    assert credentials.secret_access_key not in token and "carol" not in token


def test_a_token_is_bound_to_its_access_key_id():
    sealer = CredentialSealer({"k1": OLD})
    _, token = mint(sealer)
    second, _ = mint(sealer)
    with pytest.raises(CredentialError) as error:
        sealer.open(second.access_key_id, token)
    assert error.value.code == "InvalidToken"


def test_any_changed_character_is_refused():
    sealer = CredentialSealer({"k1": OLD})
    credentials, token = mint(sealer)
    for index in (len("tg1.k1.") + 3, len(token) - 5):
        flipped = token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1 :]
        with pytest.raises(CredentialError):
            sealer.open(credentials.access_key_id, flipped)


def test_keys_rotate_new_credentials_sealed_with_the_first_old_ones_still_open():
    before = CredentialSealer({"old": OLD})
    old_credentials, old_token = mint(before)
    after = CredentialSealer({"new": NEW, "old": OLD})
    assert after.open(old_credentials.access_key_id, old_token) == old_credentials
    _, new_token = mint(after)
    assert new_token.startswith("tg1.new.")
    retired = CredentialSealer({"new": NEW})
    with pytest.raises(CredentialError, match="does not hold"):
        retired.open(old_credentials.access_key_id, old_token)


def test_an_expired_token_is_refused_as_expired():
    sealer = CredentialSealer({"k1": OLD})
    credentials, token = mint(sealer, expires_in=-1)
    with pytest.raises(CredentialError) as error:
        sealer.open(credentials.access_key_id, token)
    assert error.value.code == "ExpiredToken"


def test_keys_are_parsed_and_checked():
    import base64

    keys = parse_keys(f"a:{base64.b64encode(OLD).decode()}, b:{base64.b64encode(NEW).decode()}")
    assert keys == {"a": OLD, "b": NEW} and list(keys) == ["a", "b"]
    with pytest.raises(ValueError, match="KEY_ID:BASE64"):
        parse_keys("just-a-key")
    with pytest.raises(ValueError, match="32 bytes"):
        CredentialSealer({"a": b"short"})
