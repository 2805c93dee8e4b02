"""Signing in to the console: OpenID Connect's authorization code flow with PKCE (RFC 7636).

The console is the relying party. `start` makes the state, nonce and code verifier (kept on
the server, keyed by the state) and the provider's authorization URL; `finish` trades the code
for an ID token at the provider's token endpoint and validates that token like any other, its
audience being the console's client id, and its nonce the one this sign-in sent. Endpoints come
from the provider's discovery document.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from jose import jwt

from tracegate.config import IdentityConfig, ProviderConfig
from tracegate.denial import Denial
from tracegate.identity.oidc import TokenValidator
from tracegate.identity.principal import Principal

PENDING_SECONDS = 600  # a sign-in must come back from the provider within this
MAX_PENDING = 10_000


class SignInFailed(Exception):
    """The sign-in could not be completed; the message says why, without secrets."""


@dataclass(frozen=True)
class PendingSignIn:
    state: str
    nonce: str
    verifier: str
    started: float
    then: str  # where to go once signed in (a console path)


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class SignIn:
    def __init__(
        self,
        provider: ProviderConfig,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        verify_tls: bool = True,
    ) -> None:
        self.provider = provider
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.verify_tls = verify_tls
        # ID tokens are for the console (audience: its client id), from this provider only.
        console_provider = provider.model_copy(update={"audience": client_id})
        self.validator = TokenValidator(IdentityConfig(providers=[console_provider]))
        self._endpoints: dict[str, str] | None = None
        self._pending: dict[str, PendingSignIn] = {}

    async def endpoints(self) -> dict[str, str]:
        if self._endpoints is None:
            url = self.provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=10, verify=self.verify_tls) as client:
                    document = (await client.get(url)).raise_for_status().json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInFailed(f"the identity provider's discovery failed: {exc}") from None
            if document.get("issuer") != self.provider.issuer:
                raise SignInFailed("the discovery document names another issuer")
            found = {k: document.get(k) for k in ("authorization_endpoint", "token_endpoint")}
            if not all(
                isinstance(v, str) and v.startswith(("https://", "http://")) for v in found.values()
            ):
                raise SignInFailed("the provider publishes no authorization or token endpoint")
            self._endpoints = found  # type: ignore[assignment]
        return self._endpoints  # type: ignore[return-value]

    async def start(self, then: str) -> tuple[str, PendingSignIn]:
        """The provider's URL to send the browser to, and what the callback must match."""
        endpoints = await self.endpoints()
        pending = PendingSignIn(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            started=time.time(),
            then=then,
        )
        self._forget_old()
        self._pending[pending.state] = pending
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": "openid profile email",
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": _challenge(pending.verifier),
                "code_challenge_method": "S256",
            }
        )
        return f"{endpoints['authorization_endpoint']}?{query}", pending

    def take(self, state: str) -> PendingSignIn | None:
        """The sign-in this state began (once: a state is never accepted twice)."""
        pending = self._pending.pop(state, None)
        if pending is None or time.time() - pending.started > PENDING_SECONDS:
            return None
        return pending

    async def finish(self, code: str, pending: PendingSignIn) -> Principal:
        endpoints = await self.endpoints()
        form: dict[str, Any] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "client_id": self.client_id,
            "code_verifier": pending.verifier,
        }
        auth = (self.client_id, self.client_secret) if self.client_secret else None
        try:
            async with httpx.AsyncClient(timeout=10, verify=self.verify_tls) as client:
                answer = await client.post(endpoints["token_endpoint"], data=form, auth=auth)
        except httpx.HTTPError as exc:
            raise SignInFailed(f"the token endpoint could not be reached: {exc}") from None
        if answer.status_code != 200:
            raise SignInFailed(f"the token endpoint refused the code ({answer.status_code})")
        token = (
            answer.json().get("id_token")
            if answer.headers.get("content-type", "").startswith("application/json")
            else None
        )
        if not isinstance(token, str):
            raise SignInFailed("the token endpoint returned no ID token")
        try:
            principal = await self.validator.validate(token)
        except Denial as denial:
            raise SignInFailed(f"the ID token was refused: {denial.reason}") from None
        if not secrets.compare_digest(
            str(jwt.get_unverified_claims(token).get("nonce", "")), pending.nonce
        ):
            raise SignInFailed("the ID token's nonce is not this sign-in's")
        return principal

    def _forget_old(self) -> None:
        now = time.time()
        if len(self._pending) > MAX_PENDING:
            self._pending.clear()  # a flood of unfinished sign-ins: start over
        for state in [s for s, p in self._pending.items() if now - p.started > PENDING_SECONDS]:
            del self._pending[state]
