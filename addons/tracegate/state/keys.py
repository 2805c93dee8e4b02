"""Keys that every replica must share, kept in the shared database.

The first replica to start makes the key and stores it; the others read that one (a
replica that raced it discards its own). Whoever can read the database can then sign such
tokens: protect its credentials like the gateway's own.
"""

from __future__ import annotations

import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tracegate.state.database import DatabaseUnavailable, SharedDatabase

EXCHANGE_KEY = "saml-exchange-es256"


SESSION_KEY = "session-hmac"


def _stored(database: SharedDatabase, name: str, candidate: str) -> str:
    """What is stored under `name`: `candidate`, if no replica stored one first."""
    with database.connection() as conn:
        conn.execute(
            "INSERT INTO shared_keys (name, pem) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (name, candidate),
        )
        row = conn.execute("SELECT pem FROM shared_keys WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise DatabaseUnavailable(f"the shared key {name} was not stored")
    return str(row[0])


def shared_secret(database: SharedDatabase, name: str = SESSION_KEY) -> bytes:
    """32 random bytes every replica holds the same of (hex in the database)."""
    return bytes.fromhex(_stored(database, name, secrets.token_hex(32)))


def shared_ec_key(database: SharedDatabase, name: str = EXCHANGE_KEY) -> ec.EllipticCurvePrivateKey:
    """The P-256 key stored under `name`, made and stored first if there is none."""
    candidate = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = _stored(database, name, candidate.decode())
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise DatabaseUnavailable(f"the shared key {name} is not an EC key")
    return key
