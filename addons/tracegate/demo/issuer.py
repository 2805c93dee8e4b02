"""A small OIDC token issuer for the demo and the tests: real keys, a JWKS served over HTTP.

It generates RSA and EC key pairs in memory, serves `/.well-known/openid-configuration` and
`/jwks.json` on loopback, and mints signed tokens. Keys can be rotated, and the server can be
told to fail, to exercise the gateway's JWKS handling.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

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


@dataclass
class TokenIssuer:
    """Mints tokens for `issuer`/`audience`; `serve()` publishes the JWKS over HTTP."""

    audience: str = "tracegate"
    issuer: str = ""
    keys: list[SigningKey] = field(default_factory=list)
    fail_jwks: bool = False
    jwks_delay: float = 0.0
    jwks_requests: int = 0
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
                    body = {"issuer": issuer.issuer, "jwks_uri": f"{issuer.issuer}/jwks.json"}
                    return self._json(200, body)
                if self.path.startswith("/jwks.json"):
                    issuer.jwks_requests += 1
                    if issuer.jwks_delay:
                        time.sleep(issuer.jwks_delay)
                    if issuer.fail_jwks:
                        return self._json(503, {"error": "unavailable"})
                    return self._json(200, issuer.jwks())
                self._json(404, {"error": "not found"})

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
