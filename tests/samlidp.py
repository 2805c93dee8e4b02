"""A SAML 2.0 identity provider for the tests: real keys and certificate, signed assertions."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import XMLSigner

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
RECIPIENT = "https://tracegate.test/saml/exchange"
SP = "urn:tracegate:sp"


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class TestIdP:
    __test__ = False  # not a pytest class

    def __init__(self, entity_id: str = "https://idp.example.test/saml") -> None:
        self.entity_id = entity_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test idp")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self.key, hashes.SHA256())
        )

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def metadata(self) -> bytes:
        der = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()
        return (
            f'<md:EntityDescriptor xmlns:md="{MD}" xmlns:ds="{DS}" entityID="{self.entity_id}">'
            "<md:IDPSSODescriptor protocolSupportEnumeration="
            '"urn:oasis:names:tc:SAML:2.0:protocol">'
            '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>'
            f"<ds:X509Certificate>{der}</ds:X509Certificate>"
            "</ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
            "</md:IDPSSODescriptor></md:EntityDescriptor>"
        ).encode()

    def assertion(
        self,
        subject: str = "alice@corp.example",
        groups: tuple[str, ...] = ("support-engineers",),
        audience: str = SP,
        lifetime: int = 300,
        issued_ago: int = 0,
        name_id_xml: str | None = None,
        recipient: str | None = None,
        confirmation: str | None = None,
    ) -> etree._Element:
        now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=issued_ago)
        end = now + dt.timedelta(seconds=lifetime)
        values = "".join(f"<saml:AttributeValue>{g}</saml:AttributeValue>" for g in groups)
        name_id = name_id_xml or subject
        xml = (
            f'<saml:Assertion xmlns:saml="{SAML}" ID="_{uuid.uuid4().hex}" Version="2.0" '
            f'IssueInstant="{_iso(now)}">'
            f"<saml:Issuer>{self.entity_id}</saml:Issuer>"
            f"<saml:Subject><saml:NameID>{name_id}</saml:NameID>"
            + (
                confirmation
                if confirmation is not None
                else '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
                f'<saml:SubjectConfirmationData NotOnOrAfter="{_iso(end)}" '
                f'Recipient="{recipient or RECIPIENT}"/></saml:SubjectConfirmation>'
            )
            + "</saml:Subject>"
            f'<saml:Conditions NotBefore="{_iso(now)}" NotOnOrAfter="{_iso(end)}">'
            f"<saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience>"
            "</saml:AudienceRestriction></saml:Conditions>"
            f'<saml:AttributeStatement><saml:Attribute Name="groups">{values}'
            "</saml:Attribute></saml:AttributeStatement>"
            "</saml:Assertion>"
        )
        return etree.fromstring(xml)

    def sign(
        self, element: etree._Element, key_pem: bytes | None = None, cert_pem: bytes | None = None
    ) -> etree._Element:
        return XMLSigner().sign(
            element,
            key=key_pem or self.key_pem,
            cert=(cert_pem or self.cert_pem).decode(),
            reference_uri=element.get("ID"),
            id_attribute="ID",
        )

    @staticmethod
    def encode(element: etree._Element | bytes) -> str:
        data = element if isinstance(element, bytes) else etree.tostring(element)
        return base64.b64encode(data).decode()

    def signed(self, **kwargs) -> str:
        return self.encode(self.sign(self.assertion(**kwargs)))
