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
    (
        3,
        (
            # Approvals every replica sees: the row as `Approval.to_row` makes it (JSON), and
            # the columns the gateway looks them up by.
            "CREATE TABLE approvals (id TEXT PRIMARY KEY, status TEXT NOT NULL, "
            "requester_subject TEXT NOT NULL, requester_issuer TEXT NOT NULL, "
            "request_key TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
            "grant_until DOUBLE PRECISION, row TEXT NOT NULL)",
            "CREATE INDEX approvals_grant ON approvals "
            "(requester_subject, requester_issuer, request_key, status)",
            "CREATE INDEX approvals_status ON approvals (status, created_at)",
            "CREATE TABLE approval_events (id BIGSERIAL PRIMARY KEY, ts TEXT NOT NULL, "
            "approval_id TEXT NOT NULL, flow_id TEXT, event TEXT NOT NULL, actor TEXT, "
            "how TEXT, detail TEXT, replica TEXT)",
            "CREATE INDEX approval_events_approval ON approval_events (approval_id, id)",
        ),
    ),
)
LATEST = MIGRATIONS[-1][0]
# pg_advisory_xact_lock key for migrations: "tracegat" in ASCII.
MIGRATION_LOCK = 0x7472616365676174
