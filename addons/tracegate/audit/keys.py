"""The audit log's signing key (Ed25519, PEM, kept outside the database) and its public forms.

Auditors get the public key as a PEM file or as the C2SP verifier key
(`origin+keyid+base64`), which also fixes the log's origin line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tracegate.audit.note import ED25519, NoteError, NoteSigner, Verifier


@dataclass(frozen=True)
class SigningKey:
    private: Ed25519PrivateKey

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return cls(key)

    @classmethod
    def generate(cls, path: str | Path, origin: str | None = None) -> Path:
        """Write a new private key (mode 600), its public key beside it (`.pub`) and, given
        the log's origin, its verifier key (`.vkey`)."""
        key = Ed25519PrivateKey.generate()
        path = Path(path)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        public = path.with_name(path.name + ".pub")
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        if origin:
            vkey = NoteSigner(origin, key).verifier.vkey
            path.with_name(path.name + ".vkey").write_text(vkey + "\n")
        return public

    def signer(self, origin: str) -> NoteSigner:
        return NoteSigner(origin, self.private)


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        private = serialization.load_pem_private_key(data, password=None)
        key = private.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 key")
    return key


def log_verifier(key: str, origin: str | None) -> Verifier:
    """The log's verifier from a verifier key (string or file) or a PEM key and the origin."""
    text = Path(key).read_text().strip() if Path(key).is_file() else key.strip()
    if "-----BEGIN" not in text:
        verifier = Verifier.parse(text)
        if origin and verifier.name != origin:
            raise NoteError(f"the verifier key is for {verifier.name!r}, not {origin!r}")
        return verifier
    if not origin:
        raise NoteError("a PEM key needs the log's origin (or give the .vkey)")
    return Verifier(origin, ED25519, load_public_key(key))
