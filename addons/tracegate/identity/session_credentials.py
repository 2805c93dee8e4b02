"""Temporary AWS credentials the gateway mints, which carry their own meaning.

The session token is an AES-GCM encryption of everything the gateway needs to know about the
credentials: the access key id and secret, who they were issued to, under which role and
purpose, until when. Any gateway instance holding the key can open it, so several instances
need no shared store for credentials; the key id in front lets keys rotate (new credentials
are sealed with the first key, older ones open with any key still configured). The access key
id is bound into the encryption as associated data, so a token cannot be moved to another key.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tracegate.identity.principal import Principal

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
VERSION = "tg1"


class CredentialError(Exception):
    """The credentials cannot be used: unknown, tampered with, or expired."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class SessionCredentials:
    access_key_id: str
    secret_access_key: str
    role: str
    purpose: str
    expires_at: float
    subject: str
    issuer: str
    provider: str
    groups: tuple[str, ...] = ()
    # The token's claims policy needs later (role match, partition, route claims); no others.
    claims: Mapping[str, Any] = field(default_factory=dict)

    def principal(self) -> Principal:
        return Principal(
            self.subject,
            self.issuer,
            self.provider,
            self.groups,
            claims=dict(self.claims),
            expires_at=self.expires_at,
        )


class CredentialSealer:
    """Mints and opens session tokens with the configured keys (`{key id: 32-byte key}`)."""

    def __init__(self, keys: Mapping[str, bytes]) -> None:
        if not keys:
            raise ValueError("at least one session key is needed")
        for kid, key in keys.items():
            if len(key) != 32 or not kid.isalnum():
                raise ValueError(f"session key {kid!r}: 32 bytes and an alphanumeric id needed")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self._current = next(iter(keys))

    def mint(
        self,
        principal: Principal,
        role: str,
        purpose: str,
        expires_at: float,
        claims: Mapping[str, Any],
    ) -> tuple[SessionCredentials, str]:
        """New credentials and their session token."""
        akid = "ASIA" + "".join(secrets.choice(_BASE32) for _ in range(16))
        credentials = SessionCredentials(
            access_key_id=akid,
            secret_access_key=base64.b64encode(os.urandom(30)).decode(),
            role=role,
            purpose=purpose,
            expires_at=expires_at,
            subject=principal.subject,
            issuer=principal.issuer,
            provider=principal.provider,
            groups=principal.groups,
            claims=dict(claims),
        )
        payload = json.dumps(
            {
                "k": credentials.secret_access_key,
                "r": role,
                "p": purpose,
                "e": expires_at,
                "s": principal.subject,
                "i": principal.issuer,
                "v": principal.provider,
                "g": list(principal.groups),
                "c": credentials.claims,
            },
            separators=(",", ":"),
        ).encode()
        nonce = os.urandom(12)
        sealed = self._keys[self._current].encrypt(nonce, payload, akid.encode())
        token = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return credentials, f"{VERSION}.{self._current}.{token}"

    def open(self, access_key_id: str, token: str, now: float | None = None) -> SessionCredentials:
        """The credentials a token holds, if this gateway sealed them for that key id."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise CredentialError(
                "InvalidToken", "The provided token is malformed or otherwise invalid."
            )
        _, kid, body = parts
        aead = self._keys.get(kid)
        if aead is None:
            raise CredentialError(
                "InvalidToken",
                "The provided token was sealed with a key this gateway does not hold.",
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            payload = json.loads(aead.decrypt(raw[:12], raw[12:], access_key_id.encode()))
        except (InvalidTag, ValueError):
            raise CredentialError(
                "InvalidToken", "The provided token is malformed or otherwise invalid."
            ) from None
        credentials = SessionCredentials(
            access_key_id=access_key_id,
            secret_access_key=payload["k"],
            role=payload["r"],
            purpose=payload["p"],
            expires_at=payload["e"],
            subject=payload["s"],
            issuer=payload["i"],
            provider=payload["v"],
            groups=tuple(payload["g"]),
            claims=payload["c"],
        )
        if (time.time() if now is None else now) >= credentials.expires_at:
            raise CredentialError("ExpiredToken", "The provided token has expired.")
        return credentials


def parse_keys(text: str) -> dict[str, bytes]:
    """`kid:base64key[,kid:base64key...]`, the first the one new credentials are sealed with."""
    keys: dict[str, bytes] = {}
    for item in text.replace("\n", ",").split(","):
        item = item.strip()
        if not item:
            continue
        kid, sep, encoded = item.partition(":")
        if not sep:
            raise ValueError("write each session key as KEY_ID:BASE64 (32 bytes)")
        try:
            keys[kid.strip()] = base64.b64decode(encoded.strip(), validate=True)
        except ValueError:
            raise ValueError(f"session key {kid.strip()!r} is not base64") from None
    return keys
