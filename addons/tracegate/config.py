"""The gateway's configuration: one YAML file, validated completely before anything runs.

Every model forbids unknown keys, so a typo is an error at start-up rather than a silently
ignored policy. `load_config` turns any problem into a `ConfigError` whose message is one line
naming the file, the key path and what is wrong.

This module composes the whole file: identity, limits, audit, approvals, roles and their
scopes. Each store kind's `upstream` model lives beside its adapter (`stores/s3_config.py`,
`stores/dynamodb_config.py`, `stores/http_config.py`) and says what that kind's scopes name;
what they all share is in `configbase.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tracegate.configbase import (
    ConfigError,
    Strict,
    check_jsonpath,
    parse_size,
)
from tracegate.detectors.phones import DEFAULT_REGIONS as DEFAULT_PHONE_REGIONS
from tracegate.stores.credentials import CredentialsConfig
from tracegate.stores.dynamodb_config import DynamoUpstreamConfig
from tracegate.stores.http_config import HttpUpstreamConfig, RouteConfig
from tracegate.stores.s3_config import S3UpstreamConfig

# Names other modules (and operators' scripts) import from here; each lives beside its store.
__all__ = [
    "ConfigError",
    "CredentialsConfig",
    "DynamoUpstreamConfig",
    "GatewayConfig",
    "HttpUpstreamConfig",
    "RouteConfig",
    "S3UpstreamConfig",
    "ScopeConfig",
    "load_config",
    "parse_size",
]

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)


MaskAction = Literal["drop", "redact", "hash", "partial"]
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # an environment variable's name


class ListenConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # When true, requests that arrive as plaintext HTTP are refused (the listener would take both).
    require_tls: bool = False
    # PEM with certificate and key for the listener, handed to mitmproxy's `certs` option.
    certificate: str | None = None


class AdminConfig(Strict):
    """The admin listener: health, readiness and metrics, never reachable via the store route."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8090, ge=0, le=65535)
    # How long a readiness result (which signs a request to the store) is reused.
    readiness_cache_seconds: float = Field(5.0, ge=0)


class LoggingConfig(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    # One JSON line per decision: "stderr", "stdout", a file path, or "none".
    decisions: str = "stderr"


class ProviderConfig(Strict):
    name: str
    issuer: str
    audience: str
    jwks_uri: str | None = None
    jwks_file: str | None = None
    # Find jwks_uri in {issuer}/.well-known/openid-configuration (whose issuer must match).
    discovery: bool = False
    algorithms: list[str] = ["RS256", "ES256"]
    roles_claim: str = "groups"
    subject_claim: str = "sub"
    jwks_refresh_seconds: int = Field(600, ge=10)

    @field_validator("algorithms")
    @classmethod
    def _only_asymmetric(cls, algorithms: list[str]) -> list[str]:
        if not algorithms:
            raise ValueError("at least one algorithm is required")
        bad = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ValueError(
                f"algorithm(s) {', '.join(bad)} not allowed; use asymmetric ones: "
                + ", ".join(sorted(ASYMMETRIC_ALGORITHMS))
            )
        return algorithms

    @model_validator(mode="after")
    def _one_key_source(self) -> ProviderConfig:
        if sum((bool(self.jwks_uri), bool(self.jwks_file), self.discovery)) != 1:
            raise ValueError("set exactly one of jwks_uri, jwks_file or discovery: true")
        return self


class SamlProviderConfig(Strict):
    """A SAML 2.0 identity provider whose signed assertions are accepted."""

    name: str
    entity_id: str  # the assertion's <Issuer>
    audience: str  # our service provider entity id, required in <AudienceRestriction>
    # The IdP's signing certificate: from its metadata (file or URL) or a PEM file.
    metadata_file: str | None = None
    metadata_url: str | None = None
    certificate_file: str | None = None
    roles_attribute: str = "groups"
    max_assertion_bytes: int = Field(256 * 1024, ge=1024)
    # The addresses assertions are sent to (our ACS or /saml/exchange URL, as the IdP writes
    # them): a bearer SubjectConfirmation's Recipient and a Response's Destination must be one.
    recipients: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_certificate_source(self) -> SamlProviderConfig:
        sources = (self.metadata_file, self.metadata_url, self.certificate_file)
        if sum(bool(s) for s in sources) != 1:
            raise ValueError("set exactly one of metadata_file, metadata_url or certificate_file")
        return self


class StsConfig(Strict):
    """tracegate as an STS endpoint (AssumeRoleWithWebIdentity) on its own origin, and the
    SigV4 check of every S3 request signed with the credentials it mints."""

    enabled: bool = False
    # AES-GCM keys sealing the session tokens, `KEY_ID:BASE64[,KEY_ID:BASE64]` (32 bytes each;
    # the first seals new credentials): from this environment variable or a file, never here.
    keys_env: str = "TRACEGATE_STS_KEYS"
    keys_file: str | None = None
    # The host[:port] clients address and sign for: path-style requests name it, virtual-hosted
    # ones `<bucket>.<public_host>` (the SDKs' default for a named endpoint).
    public_host: str | None = None
    region: str = "us-east-1"
    account_id: str = Field("000000000000", pattern=r"^\d{12}$")
    # RoleArn -> tracegate role; roles not listed answer to arn:aws:iam::<account>:role/<role>.
    role_arns: dict[str, str] = {}
    max_duration_seconds: int = Field(3600, ge=900, le=43200)
    # Credentials may outlive the web identity token's own expiry only when this says so.
    beyond_token_expiry: bool = False

    @model_validator(mode="after")
    def _host_when_enabled(self) -> StsConfig:
        if self.enabled and not self.public_host:
            raise ValueError("public_host: give the host[:port] S3 clients use for the gateway")
        return self

    def arn_of(self, role: str) -> str:
        return self.role_arns.get(role) or f"arn:aws:iam::{self.account_id}:role/{role}"


class IdentityConfig(Strict):
    token_header: str = "X-Tracegate-Token"
    saml_header: str = "X-Tracegate-SAML"
    leeway_seconds: int = Field(30, ge=0, le=300)
    providers: list[ProviderConfig] = Field(min_length=1)
    saml: list[SamlProviderConfig] = []
    # Lifetime of tokens issued by the SAML exchange endpoint (never past the assertion's).
    exchange_token_seconds: int = Field(900, ge=60, le=43200)
    sts: StsConfig = StsConfig()

    @property
    def credential_headers(self) -> tuple[str, ...]:
        """The request headers that carry an identity: removed from flows and the audit."""
        return (self.token_header.lower(), self.saml_header.lower())


class LimitsConfig(Strict):
    max_body_bytes: int = 16 * 1024 * 1024
    # Masking one answer may take at most this long; past it the answer is refused (503).
    mask_seconds: float = Field(10.0, gt=0)
    # How long a request held by an operator's intercept may wait to be resumed.
    hold_seconds: float = Field(300, gt=0)
    # A store that sends nothing for this long has its connection closed (mitmproxy's
    # tcp_timeout); the flow is recorded as UpstreamTimeout. Approval holds do not count.
    upstream_timeout_seconds: int = Field(60, ge=1)

    @field_validator("max_body_bytes", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return parse_size(value)


class MaskingConfig(Strict):
    # The HMAC key for `hash` masks comes from this environment variable (never the YAML).
    hash_key_env: str = "TRACEGATE_HASH_KEY"


class WitnessTarget(Strict):
    """A C2SP tlog-witness: its submission prefix and its cosignature verifier key."""

    url: str = Field(pattern=r"^https?://")
    key: str  # name+keyid+base64 (type 0x04), as `tracegate witness` prints it

    @field_validator("key")
    @classmethod
    def _vkey(cls, key: str) -> str:
        from tracegate.audit.note import COSIGNATURE_V1, NoteError, Verifier

        try:
            verifier = Verifier.parse(key)
        except NoteError as exc:
            raise ValueError(str(exc)) from None
        if verifier.kind != COSIGNATURE_V1:
            raise ValueError("a witness key is a cosignature key (type 0x04)")
        return key


class ObjectLockTarget(Strict):
    """An S3 bucket created with Object Lock: each checkpoint is kept in COMPLIANCE mode."""

    bucket: str
    endpoint: str | None = None  # None: AWS's own for the region
    region: str = "us-east-1"
    prefix: str = "checkpoints/"
    retain_days: int = Field(365, ge=1)
    credentials: CredentialsConfig = CredentialsConfig(
        access_key_id_env="TRACEGATE_CHECKPOINT_ACCESS_KEY_ID",
        secret_access_key_env="TRACEGATE_CHECKPOINT_SECRET_ACCESS_KEY",
        session_token_env="TRACEGATE_CHECKPOINT_SESSION_TOKEN",
    )


class PublishTarget(Strict):
    """Where each signed checkpoint goes besides the database: exactly one of these."""

    directory: str | None = None
    witness: WitnessTarget | None = None
    object_lock: ObjectLockTarget | None = None

    @model_validator(mode="after")
    def _one(self) -> PublishTarget:
        if sum(x is not None for x in (self.directory, self.witness, self.object_lock)) != 1:
            raise ValueError("give exactly one of directory, witness or object_lock")
        return self


class AuditConfig(Strict):
    # sqlite: this process's file (`path`); postgres: one log every replica shares, in the
    # database `state` names (rows ordered into the Merkle log by one elected integrator).
    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: str = "tracegate-audit.sqlite3"
    # postgres: how often the integrator takes queued rows into the log, and how long a row
    # may wait for it before readiness fails (an alert: no replica is integrating).
    integrate_every_seconds: float = Field(0.5, gt=0, le=60)
    integration_alert_seconds: float = Field(30.0, gt=0)
    batch_max_rows: int = Field(256, ge=1)
    batch_max_wait_ms: int = Field(0, ge=0)
    # Group commit (sqlite): a batch waits up to this long while other flows in flight have
    # yet to queue their rows, so one commit and fsync covers several; a lone flow never waits.
    commit_delay_ms: float = Field(1.0, ge=0, le=100)
    # sqlite: where the rows are written. "process": a child process of the gateway's, so the
    # SQLite work never holds the event loop's GIL (`audit.writer`); "thread": in this process.
    writer: Literal["process", "thread"] = "process"
    # How long a write waits for a lock held by another process before the flow is denied.
    busy_timeout_ms: int = Field(5000, ge=0)

    @field_validator("max_body_bytes", mode="before")
    @classmethod
    def _body_size(cls, value: int | str) -> int:
        return parse_size(value)

    # Ed25519 private key (PEM) that signs checkpoints; kept outside the database.
    signing_key_file: str | None = None
    # What a requester saw is kept up to this size per body (compressed; larger is truncated).
    max_body_bytes: int = 1024 * 1024
    # A session is one token until it has been idle this long.
    session_idle_seconds: float = Field(900, gt=0)
    checkpoint_every_rows: int = Field(1000, ge=1)
    checkpoint_every_seconds: float = Field(60.0, gt=0)
    # The log's name in its checkpoints (C2SP origin line): one per log, never reused.
    log_origin: str = Field("tracegate.local/audit", pattern=r"^[^\s+]+$")
    # Off-box copies of every checkpoint (they catch a database cut short).
    publish: list[PublishTarget] = []


class StateConfig(Strict):
    """Where the state that gateway processes share lives. `sqlite` (the default) keeps it in
    the audit database's file, for one process; `postgres` in one PostgreSQL database that
    every replica uses (approvals and grants, used SAML assertion IDs, the exchange token key,
    and, with `audit.backend: postgres`, the audit log)."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    # The DSN (it holds a password) comes from this environment variable, or from this file:
    # never from the YAML.
    dsn_env: str = Field("TRACEGATE_DATABASE_URL", pattern=ENV_NAME)
    dsn_file: str | None = None
    pool_max: int = Field(8, ge=1, le=100)
    # How long a request waits for the database before it is refused (fail closed).
    timeout_seconds: float = Field(2.0, gt=0, le=60)
    # A flow held for approval is refused once the database has been unreachable this long
    # (it could not see a decision taken on another replica meanwhile).
    grace_seconds: float = Field(10.0, gt=0, le=3600)


class MaskRule(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    path: str
    action: MaskAction
    # For `partial`: how many trailing characters stay visible.
    keep: int = Field(4, ge=0)

    @field_validator("path")
    @classmethod
    def _jsonpath(cls, path: str) -> str:
        return check_jsonpath(path)


DETECTOR_GROUPS = ("secrets", "pii")


class DetectorPolicy(Strict):
    """Which content detectors run over the strings a scope may see, and what they do.

    Secrets are always detected and redacted (or dropped) unless `reveal_secrets` is true.
    """

    run: list[str] = ["secrets", "pii"]
    actions: dict[str, MaskAction] = {}
    reveal_secrets: bool = False
    # Where national phone numbers may come from (ISO 3166 regions phonenumbers knows).
    phone_regions: list[str] = list(DEFAULT_PHONE_REGIONS)

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, regions: list[str]) -> list[str]:
        from phonenumbers import PhoneMetadata

        unknown = [r for r in regions if PhoneMetadata.metadata_for_region(r) is None]
        if unknown:
            raise ValueError(f"unknown phone regions: {', '.join(unknown)} (ISO 3166 codes: GB)")
        return regions

    @model_validator(mode="after")
    def _known_names(self) -> DetectorPolicy:
        from tracegate.detectors import BY_NAME, GROUPS

        known = set(BY_NAME) | set(DETECTOR_GROUPS)
        for name in [*self.run, *self.actions]:
            if name not in known:
                raise ValueError(
                    f"unknown detector or group {name!r} (groups: secrets, pii; detectors: "
                    + ", ".join(sorted(BY_NAME))
                    + ")"
                )
        if not self.reveal_secrets:
            for name, action in self.actions.items():
                if (name == "secrets" or name in GROUPS["secrets"]) and action not in (
                    "redact",
                    "drop",
                ):
                    raise ValueError(
                        f"secrets can only be redacted or dropped ({name}: {action}); "
                        "set reveal_secrets: true to change that"
                    )
        return self

    def enabled(self) -> list[str]:
        """Detector names that run, in registry order."""
        from tracegate.detectors import ALL, GROUPS

        names = set()
        for entry in self.run:
            names.update(GROUPS.get(entry, [entry]))
        if not self.reveal_secrets:
            names.update(GROUPS["secrets"])
        return [d.name for d in ALL if d.name in names]

    def action_for(self, name: str) -> MaskAction:
        from tracegate.detectors import BY_NAME

        return self.actions.get(name) or self.actions.get(BY_NAME[name].group) or "redact"


class FieldPolicy(Strict):
    """Which parts of each trace document a scope may see. Everything else is dropped."""

    allow: Literal["all"] | list[str] = "all"

    @field_validator("allow")
    @classmethod
    def _jsonpaths(cls, allow: Literal["all"] | list[str]) -> Literal["all"] | list[str]:
        if isinstance(allow, list):
            if not allow:
                raise ValueError("an empty allow-list would return nothing; list paths or 'all'")
            for path in allow:
                check_jsonpath(path)
        return allow


_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class ApprovalWhen(Strict):
    """When a request needs a human's approval. Every condition given must hold.

    `detectors` and `response_bytes_over` are known only once the store has answered: the
    (already masked) response is then held instead of the request."""

    always: bool = False
    operations: list[str] = []
    keys: list[str] = []  # fnmatch globs against the object key or listing prefix
    max_keys_over: int | None = Field(None, ge=0)  # listings asking for more keys than this
    outside_hours: str | None = None  # "08:00-18:00" (UTC): requests outside it
    # Keys or prefixes outside the scope's `prefixes` but inside these are held, not refused.
    beyond_scope_prefixes: list[str] = []
    detectors: list[str] = []  # detector names or groups that fired while masking
    response_bytes_over: int | None = None

    @field_validator("outside_hours")
    @classmethod
    def _clock(cls, value: str | None) -> str | None:
        if value is not None and not _CLOCK.match(value):
            raise ValueError(f"expected a UTC window like '08:00-18:00', got {value!r}")
        return value

    @field_validator("beyond_scope_prefixes")
    @classmethod
    def _clean_prefixes(cls, prefixes: list[str]) -> list[str]:
        return _check_prefixes(prefixes)

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, names: list[str]) -> list[str]:
        from tracegate.detectors import BY_NAME

        unknown = [n for n in names if n not in BY_NAME and n not in DETECTOR_GROUPS]
        if unknown:
            raise ValueError(f"unknown detector or group(s) {', '.join(unknown)}")
        return names

    @field_validator("response_bytes_over", mode="before")
    @classmethod
    def _size(cls, value: int | str | None) -> int | None:
        return None if value is None else parse_size(value)

    @model_validator(mode="after")
    def _some_condition(self) -> ApprovalWhen:
        given = self.model_dump(exclude_defaults=True)
        if not given:
            raise ValueError("give at least one condition (or always: true)")
        if self.beyond_scope_prefixes and self.on_response:
            raise ValueError(
                "beyond_scope_prefixes cannot be combined with response conditions "
                "(detectors, response_bytes_over): a request beyond scope is held before it "
                "reaches the store"
            )
        return self

    @property
    def on_response(self) -> bool:
        return bool(self.detectors) or self.response_bytes_over is not None


class ApproverConfig(Strict):
    """Who may approve: principals holding any of these roles or token groups."""

    roles: list[str] = []
    groups: list[str] = []

    @model_validator(mode="after")
    def _someone(self) -> ApproverConfig:
        if not self.roles and not self.groups:
            raise ValueError("name at least one approver role or group")
        return self


class ApprovalRule(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    description: str = ""
    when: ApprovalWhen
    approvers: ApproverConfig
    required: int = Field(1, ge=1, le=10)  # distinct approvers needed
    reason_required: bool = False  # the requester must send X-Tracegate-Reason
    wait_seconds: float = Field(300, gt=0)  # how long the client is held before "pending"
    pending_seconds: float = Field(3600, gt=0)  # how long the approval can still be decided
    grant_seconds: float = Field(900, ge=0)  # how long an approval lets the request repeat


class SlackUser(Strict):
    """The identity a Slack user decides as: the same subject and issuer their tokens carry
    (so a requester is recognised on Slack too, and never approves their own request)."""

    subject: str
    issuer: str | None = None  # default: the first identity provider's issuer
    groups: list[str] = []


class SlackConfig(Strict):
    """Approve / Deny buttons on the webhook's messages, decided by Slack's signed callback
    (POST /slack/interactions on the admin listener) for the identity a Slack user maps to."""

    enabled: bool = False
    # Slack's signing secret (it signs every callback): from this variable, or this file.
    signing_secret_env: str = Field("TRACEGATE_SLACK_SIGNING_SECRET", pattern=ENV_NAME)
    signing_secret_file: str | None = None
    # Slack user id -> who decides: a subject and the groups that give them their roles.
    users: dict[str, SlackUser] = {}


class ApprovalsConfig(Strict):
    """Where approvals are announced and how mitmweb's own Resume/Kill count."""

    # Slack-compatible JSON is POSTed here for each new approval and each decision.
    webhook_url: str | None = None
    webhook_timeout_seconds: float = Field(5.0, gt=0)
    # The approval endpoint's address as approvers reach it (for links); default: admin listener.
    public_url: str | None = None
    # Resume in mitmweb / the console: "approve" (recorded as an unauthenticated operator
    # approval) or "refuse" (only the authenticated endpoint can approve).
    ui_resume: Literal["approve", "refuse"] = "approve"
    slack: SlackConfig = SlackConfig()


class ConsoleConfig(Strict):
    """The web console on the admin listener (/console): approvers decide, auditors read the
    trail. Sign-in is OpenID Connect (authorization code with PKCE) at `provider`."""

    enabled: bool = False
    provider: str | None = None  # an identity.providers name (default: the first)
    client_id: str | None = None  # default: that provider's audience
    # A confidential client's secret, from this variable (PKCE is used either way).
    client_secret_env: str | None = Field(None, pattern=ENV_NAME)
    # The console's address as browsers reach it (default: approvals.public_url, else the
    # admin listener's); the IdP redirects back to <public_url>/console/callback.
    public_url: str | None = None
    approver_roles: list[str] = []  # roles (under `roles`) that may decide approvals here
    auditor_roles: list[str] = []  # roles that may read the audit trail and served bodies
    idle_seconds: float = Field(900, gt=0, le=86400)  # a session ends after this long unused
    max_seconds: float = Field(8 * 3600, gt=0, le=7 * 86400)  # and this long after sign-in


class PartitionScope(Strict):
    """Row-level scope: each item's (DynamoDB) or document's (HTTP store, a dotted field path)
    `attribute` must equal the token's `claim`."""

    attribute: str
    claim: str


class ScopeConfig(Strict):
    operations: list[str] = Field(min_length=1)
    # S3: key prefixes. DynamoDB: `tables`, optional `partition` and `max_limit`.
    # HTTP store: the route operations, resource `prefixes`, optional `partition`, `max_limit`.
    prefixes: list[str] = []
    tables: list[str] = []
    partition: PartitionScope | None = None
    max_limit: int | None = Field(None, ge=1)
    fields: FieldPolicy = FieldPolicy()
    masks: list[MaskRule] = []
    detectors: DetectorPolicy = DetectorPolicy()
    # Requests that wait for a human; the first rule whose conditions hold applies.
    approvals: list[ApprovalRule] = []
    # S3 listings: object key names go through the detectors too; `mask` serves them masked,
    # `refuse` denies a listing in which any key name holds a finding.
    listing_keys: Literal["mask", "refuse"] = "mask"

    @field_validator("prefixes")
    @classmethod
    def _clean_prefixes(cls, prefixes: list[str]) -> list[str]:
        return _check_prefixes(prefixes)

    @model_validator(mode="after")
    def _unique_mask_ids(self) -> ScopeConfig:
        ids = [m.id for m in self.masks]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate mask id(s): {', '.join(dupes)}")
        rules = [r.id for r in self.approvals]
        dupes = sorted({i for i in rules if rules.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate approval rule id(s): {', '.join(dupes)}")
        return self

    @property
    def beyond_prefixes(self) -> list[str]:
        """Prefixes reachable only with an approval."""
        return [p for rule in self.approvals for p in rule.when.beyond_scope_prefixes]


class RoleMatch(Strict):
    """A principal has this role when the claim holds (or contains) any of these values."""

    claim: str = "groups"
    any_of: list[str] = Field(min_length=1)


class RoleConfig(Strict):
    description: str = ""
    match: RoleMatch
    default_purpose: str
    # Whether the audit keeps the (masked) bodies this role was served, or only digests.
    bodies: Literal["masked", "none"] = "masked"
    scopes: dict[str, ScopeConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _default_has_scope(self) -> RoleConfig:
        if self.default_purpose not in self.scopes:
            raise ValueError(f"default_purpose {self.default_purpose!r} has no entry under scopes")
        return self


class PurposeConfig(Strict):
    description: str = ""


class GatewayConfig(Strict):
    version: Literal[1] = 1
    listen: ListenConfig = ListenConfig()
    identity: IdentityConfig
    upstream: Annotated[
        S3UpstreamConfig | DynamoUpstreamConfig | HttpUpstreamConfig, Field(discriminator="kind")
    ]
    limits: LimitsConfig = LimitsConfig()
    masking: MaskingConfig = MaskingConfig()
    audit: AuditConfig = AuditConfig()
    state: StateConfig = StateConfig()
    console: ConsoleConfig = ConsoleConfig()
    admin: AdminConfig = AdminConfig()
    logging: LoggingConfig = LoggingConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    purposes: dict[str, PurposeConfig] = Field(min_length=1)
    roles: dict[str, RoleConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _console_names_what_exists(self) -> GatewayConfig:
        console = self.console
        for key in ("approver_roles", "auditor_roles"):
            for role in getattr(console, key):
                if role not in self.roles:
                    raise ValueError(f"console.{key}: {role!r} is not a role under roles")
        if not console.enabled:
            return self
        if not (console.approver_roles or console.auditor_roles):
            raise ValueError("console.approver_roles: give it or auditor_roles (who may sign in)")
        names = [p.name for p in self.identity.providers]
        if not names:
            raise ValueError("console.provider: the console signs in with an OIDC provider")
        if console.provider is not None and console.provider not in names:
            raise ValueError(
                f"console.provider: {console.provider!r} is not under identity.providers"
            )
        return self

    @model_validator(mode="after")
    def _shared_audit_needs_database(self) -> GatewayConfig:
        if self.audit.backend == "postgres" and self.state.backend != "postgres":
            raise ValueError(
                "audit.backend: postgres keeps the log in the shared database; set "
                "state.backend: postgres (and its DSN) too"
            )
        return self

    @model_validator(mode="after")
    def _sts_for_s3(self) -> GatewayConfig:
        sts = self.identity.sts
        if sts.enabled and self.upstream.kind != "s3":
            raise ValueError("identity.sts.enabled: STS credentials are for S3 stores only")
        for role in sts.role_arns:
            if role not in self.roles:
                raise ValueError(f"identity.sts.role_arns.{role}: not a role under roles")
        return self

    @model_validator(mode="after")
    def _purposes_exist(self) -> GatewayConfig:
        for role_name, role in self.roles.items():
            for purpose, scope in role.scopes.items():
                if purpose not in self.purposes:
                    raise ValueError(
                        f"roles.{role_name}.scopes.{purpose}: purpose {purpose!r} is not "
                        "declared under purposes"
                    )
                _check_scope_for_store(self.upstream, f"roles.{role_name}.scopes.{purpose}", scope)
                for i, rule in enumerate(scope.approvals):
                    for approver in rule.approvers.roles:
                        if approver not in self.roles:
                            raise ValueError(
                                f"roles.{role_name}.scopes.{purpose}.approvals[{i}].approvers."
                                f"roles: role {approver!r} is not declared under roles"
                            )
        return self

    def version_hash(self) -> str:
        """A content hash of the effective config: audit rows name the policy they ran under."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# The scope settings that name resources; each store kind says which of them its scopes use.
SCOPE_RESOURCE_SETTINGS = ("prefixes", "tables", "partition", "max_limit")


def _check_scope_for_store(
    upstream: S3UpstreamConfig | DynamoUpstreamConfig | HttpUpstreamConfig,
    where: str,
    scope: ScopeConfig,
) -> None:
    """Scopes name what their store has (each store config says what: prefixes for S3,
    tables for DynamoDB, routes' resource prefixes for an HTTP store)."""
    kind, known, what = upstream.kind, upstream.read_operations, upstream.operation_words
    wrong = [op for op in scope.operations if op not in known]
    if wrong:
        raise ValueError(
            f"{where}.operations: {', '.join(wrong)} is not a {what} (allowed: "
            + ", ".join(sorted(known))
            + ")"
        )
    for i, rule in enumerate(scope.approvals):
        wrong = [op for op in rule.when.operations if op not in known]
        if wrong:
            raise ValueError(
                f"{where}.approvals[{i}].when.operations: {', '.join(wrong)} is not a {what}"
            )
        if not upstream.listing_approvals and rule.when.max_keys_over is not None:
            raise ValueError(
                f"{where}.approvals[{i}].when.max_keys_over: only for S3 listings "
                "(cap page sizes with max_limit)"
            )
    resource = upstream.scope_resource
    if not getattr(scope, resource):
        raise ValueError(
            f"{where}.{resource}: list the {upstream.scope_resource_words} this scope may read"
        )
    extra = [
        name
        for name in SCOPE_RESOURCE_SETTINGS
        if name != resource and name not in upstream.scope_settings and getattr(scope, name)
    ]
    if extra:
        raise ValueError(f"{where}.{extra[0]}: not a setting for a {kind} store")


def _check_prefixes(prefixes: list[str]) -> list[str]:
    for prefix in prefixes:
        if prefix.startswith("/") or ".." in prefix.split("/") or "//" in prefix:
            raise ValueError(f"prefix {prefix!r} must be a plain key prefix like 'traces/a/'")
    return prefixes


# Tagged unions put the tag into error locations; the operator never wrote it as a key.
_UNION_TAGS = {"upstream": {"s3", "dynamodb", "http"}}


_NAMED_KEY = re.compile(r"^[A-Za-z_][\w.\[\]-]*: ")


def _location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    previous: int | str | None = None
    for item in loc:
        if previous in _UNION_TAGS and item in _UNION_TAGS[str(previous)]:
            previous = item
            continue
        previous = item
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in ("function-after", "function-before") or "[" in str(item):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a config file, or raise ConfigError with a one-line message."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: (top level): expected a mapping of settings")
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        extra = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        where = _location(first["loc"])
        if where == "(top level)" and _NAMED_KEY.match(message):
            raise ConfigError(f"{path}: {message}{extra}") from None  # it names its own key
        raise ConfigError(f"{path}: {where}: {message}{extra}") from None
