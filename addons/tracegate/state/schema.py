"""The shared database's schema, as numbered migrations applied in order at start-up.

Each gateway applies the ones the database lacks, under an advisory lock so two replicas
starting together never run the same migration twice; a database migrated by a newer tracegate
is refused (this version cannot know what its tables now mean).
"""

from __future__ import annotations

# (version, statements). Append only: a released migration is never edited.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            # SAML assertion IDs already used, until their assertion expires (replay cache).
            "CREATE TABLE saml_assertions (id TEXT PRIMARY KEY, expires DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX saml_assertions_expires ON saml_assertions (expires)",
        ),
    ),
    (
        2,
        (
            # Keys every replica must hold the same of (PEM): the /saml/exchange token key.
            "CREATE TABLE shared_keys (name TEXT PRIMARY KEY, pem TEXT NOT NULL, "
            "created TIMESTAMPTZ NOT NULL DEFAULT now())",
        ),
    ),
)
LATEST = MIGRATIONS[-1][0]
# pg_advisory_xact_lock key for migrations: "tracegat" in ASCII.
MIGRATION_LOCK = 0x7472616365676174
