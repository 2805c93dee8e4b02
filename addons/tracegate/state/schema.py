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
    (
        4,
        (
            # The shared audit log: the tables and columns of a replica's SQLite file (so one
            # reader and one verifier serve both), plus the replica that served each flow.
            "CREATE TABLE flows (id BIGSERIAL PRIMARY KEY, ts TEXT, flow_id TEXT, "
            "session_id TEXT, policy_version TEXT, client TEXT, subject TEXT, issuer TEXT, "
            "roles TEXT, role TEXT, purpose TEXT, method TEXT, path TEXT, operation TEXT, "
            "resource TEXT, decision TEXT, reason TEXT, masks TEXT, status INTEGER, "
            "bytes_upstream BIGINT, bytes_returned BIGINT, latency_ms DOUBLE PRECISION, "
            "upstream_sha256 TEXT, returned_sha256 TEXT, approval TEXT, body_sha256 TEXT, "
            "identity TEXT, instance TEXT)",
            "CREATE INDEX flows_flow_id ON flows (flow_id)",
            "CREATE INDEX flows_subject_ts ON flows (subject, ts)",
            "CREATE INDEX flows_session ON flows (session_id)",
            "CREATE TABLE bodies (flow_id TEXT PRIMARY KEY, request TEXT, status INTEGER, "
            "response_headers TEXT, response_body BYTEA, truncated INTEGER, "
            "ts_start DOUBLE PRECISION, ts_end DOUBLE PRECISION)",
            "CREATE TABLE policies (version TEXT PRIMARY KEY, ts TEXT, config TEXT)",
            "CREATE TABLE log_entries (idx BIGINT PRIMARY KEY, kind TEXT NOT NULL, "
            "ref BIGINT NOT NULL, entry TEXT)",
            # A row enters the log once, whichever integrator takes it.
            "CREATE UNIQUE INDEX log_entries_ref ON log_entries (kind, ref) WHERE kind <> 'prune'",
            "CREATE TABLE log_nodes (key BIGINT PRIMARY KEY, level INTEGER NOT NULL, "
            "idx BIGINT NOT NULL, hash BYTEA NOT NULL)",
            # prev_size is unique: two integrators extending the same checkpoint cannot both
            # commit (the compare-and-swap that keeps the log from forking).
            "CREATE TABLE log_checkpoints (size BIGINT PRIMARY KEY, root BYTEA NOT NULL, "
            "note TEXT NOT NULL, ts TEXT NOT NULL, prev_size BIGINT NOT NULL UNIQUE)",
            # Rows committed by a replica and not yet in the log (the integrator's queue).
            "CREATE TABLE audit_pending (kind TEXT NOT NULL, ref BIGINT NOT NULL, "
            "since TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (kind, ref))",
            "CREATE INDEX audit_pending_since ON audit_pending (since)",
        ),
    ),
    (
        5,
        (
            # Sessions every replica continues: a token's keyed hash (never the token or its
            # plain digest), its session id, and when any replica last saw it (epoch seconds).
            "CREATE TABLE sessions (key TEXT PRIMARY KEY, session_id TEXT NOT NULL, "
            "last_seen DOUBLE PRECISION NOT NULL)",
            "CREATE INDEX sessions_last_seen ON sessions (last_seen)",
        ),
    ),
    (
        6,
        (
            # A denial's code, as the client got it (audit.log ADDED_COLUMNS).
            "ALTER TABLE flows ADD COLUMN code TEXT",
        ),
    ),
)
LATEST = MIGRATIONS[-1][0]
# pg_advisory_xact_lock key for migrations: "tracegat" in ASCII.
MIGRATION_LOCK = 0x7472616365676174
