"""C2SP signed notes (Ed25519), checkpoints and v1 cosignatures.

A note is text ending in a newline, a blank line, then signature lines
`— <key name> base64(4-byte key id || signature)`. The key id is
`SHA-256(name || "\\n" || type || public key)[:4]`: type 0x01 for a log's Ed25519 key, 0x04 for
a witness's timestamped cosignature. Verifier keys travel as `name+hexid+base64(type || key)`,
the form Go's `sumdb/note` and the C2SP tools print.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
DASH = "\u2014"


class NoteError(ValueError):
    """A note, key or signature that cannot be read or does not verify."""


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, kind: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([kind]) + public).digest()[:4]


def check_key_name(name: str) -> str:
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


@dataclass(frozen=True)
class Verifier:
    """A public key that may have signed a note: a log's (0x01) or a witness's (0x04)."""

    name: str
    kind: int
    public: Ed25519PublicKey

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.kind, _raw(self.public))

    @property
    def vkey(self) -> str:
        material = base64.b64encode(bytes([self.kind]) + _raw(self.public)).decode()
        return f"{self.name}+{self.id.hex()}+{material}"

    @classmethod
    def parse(cls, vkey: str) -> Verifier:
        """Read `name+hexid+base64(type || key)`; the id must match the key."""
        name, plus, rest = vkey.strip().partition("+")
        hex_id, plus2, material = rest.partition("+")
        try:
            raw = base64.b64decode(material, validate=True)
            wanted = bytes.fromhex(hex_id)
        except ValueError:
            raise NoteError(f"not a verifier key: {vkey!r}") from None
        if not (plus and plus2) or len(raw) != 33 or raw[0] not in (ED25519, COSIGNATURE_V1):
            raise NoteError(f"not an Ed25519 verifier key: {vkey!r}")
        verifier = cls(check_key_name(name), raw[0], Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.id != wanted:
            raise NoteError(f"verifier key {vkey!r}: its key id does not match its key")
        return verifier


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 private key under a name: signs notes (0x01) or cosigns (0x04)."""

    name: str
    private: Ed25519PrivateKey
    kind: int = ED25519

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.kind, self.private.public_key())

    def sign(self, text: str) -> str:
        """The signature line for `text` (the note body, final newline included)."""
        if self.kind != ED25519:
            raise NoteError("a cosigning key signs with `cosign`")
        signature = self.private.sign(_body(text).encode())
        return _line(self.name, self.verifier.id + signature)

    def cosign(self, text: str, timestamp: int) -> str:
        """A tlog-cosignature/v1 line: `cosignature/v1`, `time T`, then the checkpoint body."""
        if self.kind != COSIGNATURE_V1:
            raise NoteError("only a cosignature key (type 0x04) cosigns")
        message = f"cosignature/v1\ntime {timestamp}\n{_body(text)}".encode()
        payload = struct.pack(">Q", timestamp) + self.private.sign(message)
        return _line(self.name, self.verifier.id + payload)


def _line(name: str, blob: bytes) -> str:
    return f"{DASH} {name} {base64.b64encode(blob).decode()}\n"


def _body(text: str) -> str:
    if not text.endswith("\n") or "\n\n" in text:
        raise NoteError("a note body is lines ending in a newline, none of them empty")
    return text


def sign_note(text: str, signer: NoteSigner) -> str:
    return f"{_body(text)}\n{signer.sign(text)}"


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    blob: bytes  # signature (0x01) or timestamp || signature (0x04)
    line: str


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]

    @classmethod
    def parse(cls, note: str) -> Note:
        text, sep, sigs = note.rpartition("\n\n")
        if not sep or not sigs.endswith("\n"):
            raise NoteError("not a signed note (no blank line before signatures)")
        signatures = []
        for line in sigs.splitlines(keepends=True):
            dash, _, rest = line.partition(" ")
            name, _, blob = rest.rstrip("\n").partition(" ")
            try:
                raw = base64.b64decode(blob, validate=True)
            except ValueError:
                raise NoteError(f"malformed signature line {line!r}") from None
            if dash != DASH or not name or len(raw) < 5:
                raise NoteError(f"malformed signature line {line!r}")
            signatures.append(Signature(name, raw[:4], raw[4:], line))
        return cls(_body(text + "\n"), tuple(signatures))

    def verified_by(self, verifier: Verifier) -> bool:
        """Whether a signature of `verifier` (name and key id both match) holds."""
        for signature in self.signatures:
            if signature.name != verifier.name or signature.key_id != verifier.id:
                continue
            if verifier.kind == ED25519:
                message, raw = self.text.encode(), signature.blob
            else:
                if len(signature.blob) != 72:
                    continue
                (timestamp,) = struct.unpack(">Q", signature.blob[:8])
                message = f"cosignature/v1\ntime {timestamp}\n{self.text}".encode()
                raw = signature.blob[8:]
            try:
                verifier.public.verify(raw, message)
                return True
            except InvalidSignature:
                continue
        return False

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line for s in self.signatures)


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint body: origin, tree size, base64 root hash."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "":
            raise NoteError("a checkpoint is an origin, a size and a root hash, one per line")
        origin, size, root = lines[0], lines[1], lines[2]
        if not size.isdigit() or (size != "0" and size.startswith("0")):
            raise NoteError(f"checkpoint size {size!r} is not a decimal number")
        try:
            raw = base64.b64decode(root, validate=True)
        except ValueError:
            raise NoteError("checkpoint root is not base64") from None
        if not origin or len(raw) != 32:
            raise NoteError("checkpoint needs an origin and a 32-byte root hash")
        return cls(origin, int(size), raw)


def open_checkpoint(note: str, log: Verifier) -> tuple[Checkpoint, Note]:
    """The checkpoint a note holds, once the log's signature on it verifies."""
    parsed = Note.parse(note)
    if not parsed.verified_by(log):
        raise NoteError(f"the checkpoint is not signed by {log.name} ({log.id.hex()})")
    checkpoint = Checkpoint.parse(parsed.text)
    if checkpoint.origin != log.name:
        raise NoteError(f"the checkpoint's origin {checkpoint.origin!r} is not {log.name!r}")
    return checkpoint, parsed


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError(f"{path}: not an Ed25519 private key")
    return key
