"""SAML 2.0 assertions: verified with signxml against the IdP's certificate, used once.

Only what the signature covers is read (the element signxml returns), which defeats signature
wrapping; a document carrying more than one assertion is refused outright. DTDs and entities
are refused before parsing (XXE, billion laughs), NameIDs with comments or child nodes are
refused (the comment-truncation trick), and each assertion ID is remembered until it expires,
so an assertion is accepted once: to call the gateway repeatedly, exchange it for a token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jose import jwk, jwt
from lxml import etree
from signxml import XMLVerifier
from signxml.exceptions import InvalidInput, InvalidSignature

from tracegate.config import ConfigError, IdentityConfig, SamlProviderConfig
from tracegate.denial import unauthenticated
from tracegate.identity.principal import Principal
from tracegate.identity.replay import AssertionLedger, LedgerUnavailable

NS = {
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
ASSERTION = f"{{{NS['saml']}}}Assertion"
RESPONSE = f"{{{NS['samlp']}}}Response"
EXCHANGE_ISSUER = "urn:tracegate:saml-exchange"
EXCHANGE_AUDIENCE = "tracegate-saml-exchange"
_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
}


def _refuse(reason: str, category: str = "saml"):
    return unauthenticated(f"SAML assertion refused: {reason}", category)


def _parse(data: bytes) -> etree._Element:
    lowered = data.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise _refuse("DTDs and entities are not allowed", "saml_dtd")
    try:
        return etree.fromstring(data, etree.XMLParser(**_PARSER_OPTIONS))
    except etree.XMLSyntaxError as exc:
        raise _refuse(f"not well-formed XML ({exc.msg})", "saml_malformed") from None


def load_certificate(provider: SamlProviderConfig) -> str:
    """The IdP's signing certificate as PEM, from a PEM file or the IdP's metadata."""
    try:
        if provider.certificate_file:
            return Path(provider.certificate_file).read_text()
        if provider.metadata_file:
            metadata = Path(provider.metadata_file).read_bytes()
        else:
            assert provider.metadata_url
            response = httpx.get(provider.metadata_url, timeout=5)
            response.raise_for_status()
            metadata = response.content
    except (OSError, httpx.HTTPError) as exc:
        raise ConfigError(
            f"identity.saml {provider.name}: cannot read certificate: {exc}"
        ) from None
    try:
        root = _parse(metadata)
    except Exception:
        raise ConfigError(f"identity.saml {provider.name}: metadata is not usable XML") from None
    certs = root.xpath(
        "//md:IDPSSODescriptor/md:KeyDescriptor[not(@use) or @use='signing']"
        "//ds:X509Certificate/text()",
        namespaces=NS,
    )
    if not certs:
        raise ConfigError(f"identity.saml {provider.name}: no signing certificate in metadata")
    body = "".join(str(certs[0]).split())
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"


def _check_response(response: etree._Element, provider: SamlProviderConfig) -> None:
    """A Response must be addressed to us and unsolicited (tracegate sends no AuthnRequest,
    so one that answers a request is someone else's login)."""
    destination = response.get("Destination")
    if destination is not None and destination not in provider.recipients:
        raise _refuse(f"Response Destination {destination!r} is not this service", "saml_claims")
    if response.get("InResponseTo") is not None:
        raise _refuse("Response answers a login request (InResponseTo) tracegate never sent",
                      "saml_claims")  # fmt: skip


def _check_bearer(
    assertion: etree._Element, provider: SamlProviderConfig, now: float, leeway: int
) -> None:
    """The Web SSO profile's bearer rules: a bearer confirmation whose data names us as the
    Recipient, has not expired and answers no request of ours."""
    bearers = [
        c
        for c in assertion.findall("saml:Subject/saml:SubjectConfirmation", namespaces=NS)
        if c.get("Method") == BEARER
    ]
    if not bearers:
        raise _refuse("no bearer SubjectConfirmation (holder-of-key and others are not accepted)",
                      "saml_claims")  # fmt: skip
    for confirmation in bearers:
        data = confirmation.find("saml:SubjectConfirmationData", namespaces=NS)
        if data is None:
            raise _refuse("bearer confirmation without SubjectConfirmationData", "saml_claims")
        recipient = data.get("Recipient")
        if recipient not in provider.recipients:
            raise _refuse(f"Recipient {recipient!r} is not this service", "saml_claims")
        if data.get("InResponseTo") is not None:
            raise _refuse("confirmation answers a login request (InResponseTo) tracegate never "
                          "sent", "saml_claims")  # fmt: skip
        end = _time(data.get("NotOnOrAfter"))
        if end is None:
            raise _refuse("bearer confirmation without NotOnOrAfter", "saml_claims")
        if now - leeway >= end:
            raise _refuse("subject confirmation expired", "expired")


class SamlValidator:
    def __init__(
        self, identity: IdentityConfig, clock=time.time, ledger: AssertionLedger | None = None
    ) -> None:
        self.identity = identity
        self._clock = clock
        self._providers = {p.entity_id: (p, load_certificate(p)) for p in identity.saml}
        # Used assertion IDs also go to a durable ledger (beside the audit trail, or in the
        # database replicas share), so a restart or another gateway still refuses them.
        self._ledger = ledger

    # Used assertion IDs, shared by every validator in the process so a config reload does not
    # forget them: assertion id -> time after which it can be forgotten.
    _seen: dict[str, float] = {}
    _lock = threading.Lock()

    def validate(self, encoded: str) -> Principal:
        data = self._decode(encoded)
        root = _parse(data)
        assertions = root.xpath("//saml:Assertion", namespaces=NS)
        if root.tag not in (ASSERTION, RESPONSE):
            raise _refuse("expected a saml:Assertion or a samlp:Response", "saml_malformed")
        if len(assertions) != 1:
            raise _refuse(
                f"expected one assertion, found {len(assertions)} (wrapping?)", "saml_wrapped"
            )
        # The signed subtree comes back canonicalised (comments gone), so look at the NameID
        # as received too: a comment or element inside it is the truncation trick.
        received_name_id = assertions[0].find("saml:Subject/saml:NameID", namespaces=NS)
        if received_name_id is not None and len(received_name_id):
            raise _refuse("NameID must be plain text (no comments or elements)", "saml_subject")
        issuer = assertions[0].findtext("saml:Issuer", namespaces=NS)
        if issuer not in self._providers:
            raise _refuse(f"unknown issuer {issuer!r}", "saml_issuer")
        provider, certificate = self._providers[issuer]
        if root.tag == RESPONSE:
            _check_response(root, provider)
        assertion = self._verified_assertion(root, certificate)
        return self._principal(assertion, provider)

    def _decode(self, encoded: str) -> bytes:
        limit = max((p.max_assertion_bytes for p in self.identity.saml), default=256 * 1024)
        if len(encoded) > limit * 4 // 3 + 4:
            raise _refuse("too large", "saml_malformed")
        try:
            return base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError):
            raise _refuse("not base64", "saml_malformed") from None

    def _verified_assertion(self, root: etree._Element, certificate: str) -> etree._Element:
        try:
            result = XMLVerifier().verify(root, x509_cert=certificate)
        except (InvalidSignature, InvalidInput) as exc:
            raise _refuse(f"signature does not verify ({exc})", "saml_signature") from None
        except Exception as exc:
            raise _refuse(
                f"signature check failed ({type(exc).__name__})", "saml_signature"
            ) from None
        signed = result.signed_xml
        if signed is None:
            raise _refuse("nothing is signed", "saml_signature")
        if signed.tag == ASSERTION:
            return signed
        inner = signed.findall("saml:Assertion", namespaces=NS) if signed.tag == RESPONSE else []
        if len(inner) != 1:
            raise _refuse("the signature does not cover the assertion", "saml_signature")
        return inner[0]

    def _principal(self, assertion: etree._Element, provider: SamlProviderConfig) -> Principal:
        now, leeway = self._clock(), self.identity.leeway_seconds
        conditions = assertion.find("saml:Conditions", namespaces=NS)
        if conditions is None:
            raise _refuse("no Conditions", "saml_claims")
        not_before = _time(conditions.get("NotBefore"))
        not_after = _time(conditions.get("NotOnOrAfter"))
        if not_after is None:
            raise _refuse("no NotOnOrAfter", "saml_claims")
        if not_before is not None and now + leeway < not_before:
            raise _refuse("not yet valid (NotBefore)", "not_yet_valid")
        if now - leeway >= not_after:
            raise _refuse("expired (NotOnOrAfter)", "expired")
        restrictions = conditions.findall("saml:AudienceRestriction", namespaces=NS)
        if not restrictions:
            raise _refuse(f"wrong audience: not for {provider.audience!r}", "audience")
        for restriction in restrictions:  # each restriction must be satisfied, not just one
            audiences = restriction.xpath("saml:Audience/text()", namespaces=NS)
            if provider.audience not in [str(a).strip() for a in audiences]:
                raise _refuse(f"wrong audience: not for {provider.audience!r}", "audience")
        _check_bearer(assertion, provider, now, leeway)
        name_ids = assertion.findall("saml:Subject/saml:NameID", namespaces=NS)
        if len(name_ids) > 1:
            raise _refuse("more than one NameID in the subject", "saml_subject")
        name_id = name_ids[0] if name_ids else None
        if name_id is None or len(name_id) or not (name_id.text or "").strip():
            raise _refuse("NameID must be plain text (no comments or elements)", "saml_subject")
        subject = name_id.text.strip()
        assertion_id = assertion.get("ID")
        if not assertion_id:
            raise _refuse("no assertion ID", "saml_claims")
        values = assertion.xpath(
            "saml:AttributeStatement/saml:Attribute[@Name=$name]/saml:AttributeValue",
            namespaces=NS,
            name=provider.roles_attribute,
        )
        if any(len(value) for value in values):
            raise _refuse("an AttributeValue holds elements, not text", "saml_claims")
        self._remember(assertion_id, not_after + leeway, now)
        groups = [(value.text or "").strip() for value in values]
        return Principal(
            subject=subject,
            issuer=provider.entity_id,
            provider=provider.name,
            groups=tuple(groups),
            claims={"sub": subject, "groups": groups, provider.roles_attribute: groups},
            expires_at=not_after,
        )

    def _remember(self, assertion_id: str, until: float, now: float) -> None:
        with self._lock:
            for key in [k for k, expiry in self._seen.items() if expiry <= now]:
                del self._seen[key]
            if assertion_id in self._seen or not self._record(assertion_id, until, now):
                raise _refuse(f"assertion {assertion_id} was already used (replay)", "saml_replay")
            self._seen[assertion_id] = until

    def _record(self, assertion_id: str, until: float, now: float) -> bool:
        """Write the ID durably; False when it is already there (used before a restart)."""
        if self._ledger is None:
            return True
        try:
            return self._ledger.record(assertion_id, until, now)
        except LedgerUnavailable as exc:  # fail closed: an ID we cannot record is not accepted
            raise _refuse(f"cannot record the assertion ID ({exc})", "saml_replay") from None


class ExchangeIssuer:
    """Short-lived tokens for a verified SAML principal, signed with a per-process key (or,
    with several replicas, the key they share: `use_key`) and verified by the same
    TokenValidator as any other token."""

    _key = ec.generate_private_key(ec.SECP256R1())
    _kid = f"exchange-{uuid.uuid4().hex[:8]}"

    @classmethod
    def use_key(cls, key: ec.EllipticCurvePrivateKey) -> None:
        """Sign with `key` from now on; its id comes from the key, so replicas agree on it.
        Validators built afterwards trust it (each config load builds new ones)."""
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        cls._key, cls._kid = key, f"exchange-{hashlib.sha256(public).hexdigest()[:16]}"

    @classmethod
    def public_jwk(cls) -> dict[str, Any]:
        pem = cls._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        constructed = jwk.construct(pem, "ES256").to_dict()
        key = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in constructed.items()}
        key.update(kid=cls._kid, alg="ES256", use="sig")
        return key

    @classmethod
    def token(cls, principal: Principal, lifetime: int) -> tuple[str, int]:
        now = int(time.time())
        expires = now + lifetime
        if principal.expires_at is not None:
            expires = min(expires, int(principal.expires_at))
        pem = cls._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        claims = {
            "iss": EXCHANGE_ISSUER,
            "aud": EXCHANGE_AUDIENCE,
            "sub": principal.subject,
            "groups": list(principal.groups),
            "saml_issuer": principal.issuer,
            "iat": now,
            "nbf": now,
            "exp": expires,
        }
        return jwt.encode(claims, pem, algorithm="ES256", headers={"kid": cls._kid}), expires
