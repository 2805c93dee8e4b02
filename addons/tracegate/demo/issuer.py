"""A small OIDC token issuer for the demo and the tests: real keys, a JWKS served over HTTP.

It generates RSA and EC key pairs in memory, serves `/.well-known/openid-configuration` and
`/jwks.json` on loopback, and mints signed tokens. Keys can be rotated, and the server can be
told to fail, to exercise the gateway's JWKS handling. For browser sign-in (the console) it is
also an authorization server: `/authorize` shows a one-click form for each demo user
(`add_user`) and redirects back with a code, and `/token` trades the code for an ID token,
checking the redirect URI and the PKCE verifier (S256) as a real provider does.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwk, jwt


@dataclass
class SigningKey:
    kid: str
    alg: str
    private_pem: str
    public_jwk: dict[str, Any]

    @classmethod
    def generate(cls, alg: str = "RS256", kid: str | None = None) -> SigningKey:
        if alg.startswith("ES"):
            curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
            private = ec.generate_private_key(curve[alg])
        else:
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        public_pem = (
            private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
        public = jwk.construct(public_pem, alg).to_dict()
        public_jwk = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in public.items()}
        public_jwk.update({"kid": kid, "alg": alg, "use": "sig"})
        return cls(kid, alg, pem, public_jwk)


@dataclass(frozen=True)
class DemoUser:
    """Someone who can sign in at the demo issuer: a subject and the groups its tokens carry."""

    subject: str
    groups: tuple[str, ...]
    label: str = ""


@dataclass
class _Grant:
    user: DemoUser
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    expires: float


AUTHORIZE_PARAMS = ("client_id", "redirect_uri", "state", "nonce", "code_challenge")


@dataclass
class TokenIssuer:
    """Mints tokens for `issuer`/`audience`; `serve()` publishes the JWKS over HTTP."""

    audience: str = "tracegate"
    issuer: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    fail_jwks: bool = False
    jwks_delay: float = 0.0
    jwks_requests: int = 0
    users: dict[str, DemoUser] = field(default_factory=dict)
    _codes: dict[str, _Grant] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = [SigningKey.generate("RS256"), SigningKey.generate("ES256")]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys]}

    def key(self, alg: str = "RS256") -> SigningKey:
        return next(k for k in self.keys if k.alg == alg)

    def token(
        self,
        subject: str,
        groups: list[str] | None = None,
        *,
        alg: str = "RS256",
        ttl: int = 3600,
        key: SigningKey | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "groups": groups or [],
        }
        body.update(claims)
        signing = key or self.key(alg)
        return jwt.encode(
            body, signing.private_pem, algorithm=signing.alg, headers={"kid": signing.kid}
        )

    def add_user(self, name: str, subject: str, groups: list[str], label: str = "") -> None:
        self.users[name] = DemoUser(subject, tuple(groups), label)

    def authorize(self, user_name: str, params: dict[str, str]) -> str:
        """The redirect after `user_name` signed in: back to redirect_uri with a code."""
        missing = [p for p in AUTHORIZE_PARAMS if not params.get(p)]
        if missing or params.get("code_challenge_method") != "S256":
            raise ValueError(f"authorization request lacks {', '.join(missing) or 'S256 PKCE'}")
        code = secrets.token_urlsafe(24)
        self._codes[code] = _Grant(
            self.users[user_name],
            params["client_id"],
            params["redirect_uri"],
            params["code_challenge"],
            params["nonce"],
            time.time() + 60,
        )
        query = urlencode({"code": code, "state": params["state"]})
        return f"{params['redirect_uri']}{'&' if '?' in params['redirect_uri'] else '?'}{query}"

    def redeem(self, form: dict[str, str]) -> dict[str, Any]:
        """The token endpoint: one use per code, the same client and redirect URI, and the
        verifier whose S256 digest is the challenge. ValueError for an OAuth error code."""
        grant = self._codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or grant is None:
            raise ValueError("invalid_grant")
        if grant.expires < time.time():
            raise ValueError("invalid_grant")
        if (form.get("client_id"), form.get("redirect_uri")) != (
            grant.client_id,
            grant.redirect_uri,
        ):
            raise ValueError("invalid_grant")
        verifier = form.get("code_verifier", "").encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        if not secrets.compare_digest(digest.decode(), grant.challenge):
            raise ValueError("invalid_grant")
        token = self.token(
            grant.user.subject,
            list(grant.user.groups),
            ttl=600,
            nonce=grant.nonce,
            aud=grant.client_id,
        )
        return {"id_token": token, "access_token": token, "token_type": "Bearer", "expires_in": 600}

    def _sign_in_page(self, params: dict[str, str]) -> str:
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
        )
        buttons = "".join(
            f'<button name="user" value="{html.escape(name)}">{html.escape(user.subject)}'
            f"{' (' + html.escape(user.label) + ')' if user.label else ''}</button><br>"
            for name, user in self.users.items()
        )
        return (
            "<!doctype html><title>demo sign-in</title><h1>Demo identity provider</h1>"
            f'<p>Sign in as:</p><form method="post" action="/authorize">{hidden}{buttons}</form>'
        )

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """Publish a new key beside the old ones and return it."""
        new = SigningKey.generate(alg)
        self.keys.append(new)
        return new

    # -- HTTP --------------------------------------------------------------------------

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> str:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/.well-known/openid-configuration"):
                    body = {
                        "issuer": issuer.issuer,
                        "jwks_uri": f"{issuer.issuer}/jwks.json",
                        "authorization_endpoint": f"{issuer.issuer}/authorize",
                        "token_endpoint": f"{issuer.issuer}/token",
                        "response_types_supported": ["code"],
                        "code_challenge_methods_supported": ["S256"],
                    }
                    return self._json(200, body)
                if self.path.startswith("/authorize?"):
                    query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                    return self._html(200, issuer._sign_in_page(query))
                if self.path.startswith("/jwks.json"):
                    issuer.jwks_requests += 1
                    if issuer.jwks_delay:
                        time.sleep(issuer.jwks_delay)
                    if issuer.fail_jwks:
                        return self._json(503, {"error": "unavailable"})
                    return self._json(200, issuer.jwks())
                self._json(404, {"error": "not found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if self.path == "/authorize":
                    user = form.pop("user", "")
                    try:
                        if user not in issuer.users:
                            raise ValueError("no such demo user")
                        target = issuer.authorize(user, form)
                    except ValueError as exc:
                        return self._html(400, html.escape(str(exc)))
                    self.send_response(302)
                    self.send_header("location", target)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return None
                if self.path == "/token":
                    try:
                        return self._json(200, issuer.redeem(form))
                    except ValueError as exc:
                        return self._json(400, {"error": str(exc)})
                self._json(404, {"error": "not found"})

            def _html(self, status: int, page: str) -> None:
                data = page.encode()
                self.send_response(status)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        bound_port = self._server.server_address[1]
        self.issuer = f"http://{host}:{bound_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self.issuer

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks.json"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
