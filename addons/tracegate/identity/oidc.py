"""OIDC bearer tokens: verified against the issuer's JWKS before anything is forwarded.

Keys are fetched over HTTP (or read from a file) and cached. A token with an unknown `kid`
triggers at most one refetch per minute per provider; every fetch is async and bounded, so a
slow issuer delays only the flows that need a key it has not served yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from jose import jwt
from jose.exceptions import ExpiredSignatureError, JWTClaimsError, JWTError

from tracegate.config import IdentityConfig, ProviderConfig
from tracegate.denial import Denial, unauthenticated
from tracegate.identity.principal import Principal

logger = logging.getLogger(__name__)

UNKNOWN_KID_REFETCH_SECONDS = 60.0
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0
FETCH_TIMEOUT_SECONDS = 3.0
TOKEN_CACHE_SECONDS = 60.0
TOKEN_CACHE_SIZE = 10_000


class JwksCache:
    """The signing keys of one provider, by `kid`."""

    def __init__(
        self,
        provider: ProviderConfig,
        clock: Callable[[], float] = time.monotonic,
        fetch_timeout: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self.provider = provider
        self._clock = clock
        self._fetch_timeout = fetch_timeout
        self._keys: dict[str, dict[str, Any]] = {}
        self._loaded_at: float | None = None
        self._last_attempt: float | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None
        self._retry_delay = RETRY_FIRST_SECONDS
        self._retry: asyncio.TimerHandle | None = None
        self._jwks_uri = provider.jwks_uri
        self.fixed = False  # keys given in memory (the SAML exchange's): nothing to fetch

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    async def key_for(self, kid: str | None) -> dict[str, Any] | None:
        """The JWK for `kid`, fetching only when it is unknown (rate-limited) or stale."""
        now = self._clock()
        stale = (
            self._loaded_at is None or now - self._loaded_at >= self.provider.jwks_refresh_seconds
        )
        key = self._lookup(kid)
        if key is not None and not stale:
            return key
        if key is not None:
            # Known key, stale set: serve it and refresh without making this flow wait.
            self._spawn_refresh()
            return key
        if self._lock.locked():
            await self.refresh()  # a fetch is in flight (e.g. the start-up one): join it
            return self._lookup(kid)
        if self._last_attempt is not None and now - self._last_attempt < (
            UNKNOWN_KID_REFETCH_SECONDS
        ):
            return None
        await self.refresh()
        return self._lookup(kid)

    def _lookup(self, kid: str | None) -> dict[str, Any] | None:
        if kid is not None:
            return self._keys.get(kid)
        if len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return None

    def _spawn_refresh(self) -> None:
        if not self._lock.locked():
            task = asyncio.get_running_loop().create_task(self.refresh())
            task.add_done_callback(lambda t: t.exception())

    async def refresh(self) -> None:
        """Fetch the key set once; concurrent callers share the same fetch."""
        if self.fixed:
            return
        if self._lock.locked():
            async with self._lock:
                return
        async with self._lock:
            self._last_attempt = self._clock()
            try:
                document = await self._read_document()
                keys = {
                    str(k.get("kid", f"key-{i}")): k
                    for i, k in enumerate(document.get("keys", []))
                    if isinstance(k, dict) and k.get("use", "sig") == "sig"
                }
            except Exception as exc:  # any failure leaves the old keys in place
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "tracegate: JWKS fetch for provider %s failed (retrying in %.0f s): %s",
                    self.provider.name,
                    self._retry_delay,
                    self.last_error,
                )
                self._schedule_retry()
                return
            self._keys = keys
            self._loaded_at = self._clock()
            self.last_error = None
            self._retry_delay = RETRY_FIRST_SECONDS

    def _schedule_retry(self) -> None:
        """Retry in the background with exponential backoff; flows never wait for it."""
        if self._retry is not None and not self._retry.cancelled():
            self._retry.cancel()
        loop = asyncio.get_running_loop()
        self._retry = loop.call_later(self._retry_delay, self._spawn_refresh)
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)

    async def _read_document(self) -> dict[str, Any]:
        if self.provider.jwks_file:
            return json.loads(Path(self.provider.jwks_file).read_text())
        async with httpx.AsyncClient(timeout=self._fetch_timeout) as client:
            if self._jwks_uri is None:
                self._jwks_uri = await self._discover(client)
            response = await client.get(self._jwks_uri)
            response.raise_for_status()
            return response.json()

    async def _discover(self, client: httpx.AsyncClient) -> str:
        issuer = self.provider.issuer.rstrip("/")
        response = await client.get(f"{issuer}/.well-known/openid-configuration")
        response.raise_for_status()
        document = response.json()
        if document.get("issuer") != self.provider.issuer:
            raise ValueError(
                f"discovery document names issuer {document.get('issuer')!r}, "
                f"not {self.provider.issuer!r}"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError("discovery document has no usable jwks_uri")
        return jwks_uri


class TokenValidator:
    """Turns a bearer token into a `Principal`, or raises a 401 `Denial` that says why."""

    def __init__(
        self,
        identity: IdentityConfig,
        clock: Callable[[], float] = time.monotonic,
        fetch_timeout: float = FETCH_TIMEOUT_SECONDS,
    ) -> None:
        self.identity = identity
        self._providers = {p.issuer: p for p in identity.providers}
        self._clock = clock
        self.caches = {p.issuer: JwksCache(p, clock, fetch_timeout) for p in identity.providers}
        if identity.saml:
            self._trust_saml_exchange()
        # sha256(token) -> (principal, monotonic deadline); bounded in size and age, so a
        # key withdrawn from the JWKS stops working within TOKEN_CACHE_SECONDS.
        self._verified: dict[bytes, tuple[Principal, float]] = {}

    def _trust_saml_exchange(self) -> None:
        """Tokens from the SAML exchange endpoint are verified like any other, by this key."""
        from tracegate.identity.saml import EXCHANGE_AUDIENCE, EXCHANGE_ISSUER, ExchangeIssuer

        provider = ProviderConfig(
            name="saml-exchange",
            issuer=EXCHANGE_ISSUER,
            audience=EXCHANGE_AUDIENCE,
            jwks_file="(in memory)",
            algorithms=["ES256"],
            jwks_refresh_seconds=10**9,
        )
        cache = JwksCache(provider, self._clock)
        key = ExchangeIssuer.public_jwk()
        cache._keys = {key["kid"]: key}
        cache._loaded_at = self._clock()
        cache.fixed = True
        self._providers[provider.issuer] = provider
        self.caches[provider.issuer] = cache

    async def warm_up(self) -> None:
        await asyncio.gather(*(cache.refresh() for cache in self.caches.values()))

    async def validate(self, token: str) -> Principal:
        """A cached principal for a token seen recently, else a full verification."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        cached = self._verified.get(digest)
        if cached is not None:
            principal, until = cached
            if now < until and (principal.expires_at is None or time.time() < principal.expires_at):
                return principal
            del self._verified[digest]
        principal = await self._validate(token)
        if len(self._verified) >= TOKEN_CACHE_SIZE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[digest] = (principal, now + TOKEN_CACHE_SECONDS)
        return principal

    async def _validate(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.get_unverified_claims(token)
        except JWTError:
            raise unauthenticated("malformed token: not a signed JWT", "malformed") from None
        _check_shapes(header, unverified)
        alg = header.get("alg")
        issuer = unverified.get("iss")
        provider = self._providers.get(issuer) if isinstance(issuer, str) else None
        if provider is None:
            raise unauthenticated(f"unknown token issuer {issuer!r}", "unknown_issuer")
        if not isinstance(alg, str) or alg not in provider.algorithms:
            raise unauthenticated(
                f"token algorithm {alg!r} is not allowed for issuer {provider.issuer} "
                f"(allowed: {', '.join(provider.algorithms)})",
                "algorithm",
            )
        kid = header.get("kid")
        key = await self.caches[provider.issuer].key_for(kid)
        if key is None:
            raise unauthenticated(
                f"unknown signing key (kid {kid!r}) for issuer {issuer}", "unknown_key"
            )
        if key.get("alg") not in (None, alg):
            raise unauthenticated(f"token algorithm {alg} does not match key {kid!r}", "algorithm")
        claims = self._verify(token, key, alg, provider)
        _check_shapes(header, claims)
        return self._principal(claims, provider)

    def _verify(
        self, token: str, key: dict[str, Any], alg: str, provider: ProviderConfig
    ) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=provider.audience,
                issuer=provider.issuer,
                options={"leeway": self.identity.leeway_seconds, "require_exp": True},
            )
        except ExpiredSignatureError:
            raise unauthenticated("token expired", "expired") from None
        except JWTClaimsError as exc:
            raise unauthenticated(*_claims_reason(str(exc), provider)) from None
        except JWTError as exc:
            reason = str(exc).rstrip(".") or "invalid token"
            raise unauthenticated(f"token rejected: {reason.lower()}", "signature") from None

    def _principal(self, claims: dict[str, Any], provider: ProviderConfig) -> Principal:
        subject = claims.get(provider.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise unauthenticated(f"token has no {provider.subject_claim!r} claim", "claims")
        groups = claims.get(provider.roles_claim, [])
        if isinstance(groups, str):
            groups = [groups]
        exp = claims.get("exp")
        return Principal(
            subject=subject,
            issuer=provider.issuer,
            provider=provider.name,
            groups=tuple(str(g) for g in groups if isinstance(g, str | int)),
            claims=claims,
            expires_at=float(exp),
        )


REQUIRED_CLAIMS = ("iss", "aud", "exp")
NUMERIC_DATES = ("exp", "nbf", "iat")


def _check_shapes(header: Any, claims: Any) -> None:
    """Refuse a token whose header or claims have the wrong shape before anything uses them:
    `iss`, `aud` and `exp` must be present, dates numbers (not strings or booleans), `aud` a
    string or a list of strings, `kid` and `alg` strings. Each is a 401 with its reason."""
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise unauthenticated(
            "malformed token: header and claims must be JSON objects", "malformed"
        )
    for name in ("kid", "alg", "typ"):
        if name in header and not isinstance(header[name], str):
            raise unauthenticated(f"malformed token: header {name!r} is not a string", "malformed")
    missing = [name for name in REQUIRED_CLAIMS if name not in claims]
    if missing:
        raise unauthenticated(f"token has no {', '.join(missing)} claim", "claims")
    for name in NUMERIC_DATES:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise unauthenticated(f"malformed token: claim {name!r} is not a number", "claims")
    audience = claims["aud"]
    if not (
        isinstance(audience, str)
        or (isinstance(audience, list) and audience and all(isinstance(a, str) for a in audience))
    ):
        raise unauthenticated(
            "malformed token: claim 'aud' is not a string or list of strings", "claims"
        )
    if not isinstance(claims["iss"], str):
        raise unauthenticated("malformed token: claim 'iss' is not a string", "claims")


def _claims_reason(message: str, provider: ProviderConfig) -> tuple[str, str]:
    lowered = message.lower()
    if "audience" in lowered:
        return f"wrong audience: token is not for {provider.audience!r}", "audience"
    if "issuer" in lowered:
        return f"wrong issuer: expected {provider.issuer!r}", "issuer"
    if "nbf" in lowered or "not yet valid" in lowered:
        return "token not yet valid (nbf)", "not_yet_valid"
    return f"token claims rejected: {message}", "claims"


def bearer_token(headers: dict[str, str], token_header: str) -> str:
    """The token from the configured header, else from `Authorization: Bearer`."""
    lowered = {k.lower(): v for k, v in headers.items()}
    token = lowered.get(token_header.lower(), "").strip()
    if token:
        return token.removeprefix("Bearer ").strip()
    auth = lowered.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    raise _missing_token(token_header, auth)


def _missing_token(token_header: str, auth: str) -> Denial:
    if auth.startswith("AWS4-HMAC-SHA256"):
        return unauthenticated(
            f"no identity token: AWS SDK clients must send the token in {token_header}", "missing"
        )
    return unauthenticated(
        f"no identity token: send 'Authorization: Bearer <jwt>' or '{token_header}: <jwt>'",
        "missing",
    )
