"""The gateway's configuration: one YAML file, validated completely before anything runs.

Every model forbids unknown keys, so a typo is an error at start-up rather than a silently
ignored policy. `load_config` turns any problem into a `ConfigError` whose message is one line
naming the file, the key path and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tracegate.detectors.phones import DEFAULT_REGIONS as DEFAULT_PHONE_REGIONS
from tracegate.stores.dynamodb import DYNAMODB_READ_OPERATIONS
from tracegate.stores.s3 import S3_READ_OPERATIONS

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
_SIZE = re.compile(r"^\s*(\d+)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)


class ConfigError(Exception):
    """A configuration problem, already phrased as the one line an operator should read."""


def parse_size(value: int | str) -> int:
    """Accept 1048576, '1MiB', '16 MB', '512k'."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use bytes or e.g. '16MiB')")
    number, unit = int(match.group(1)), (match.group(2) or "").upper()
    base = 1024 if "I" in unit else 1000
    return number * (base ** "BKMG".index(unit[0]) if unit else 1)


MaskAction = Literal["drop", "redact", "hash", "partial"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class IdentityConfig(Strict):
    token_header: str = "X-Tracegate-Token"
    saml_header: str = "X-Tracegate-SAML"
    leeway_seconds: int = Field(30, ge=0, le=300)
    providers: list[ProviderConfig] = Field(min_length=1)
    saml: list[SamlProviderConfig] = []
    # Lifetime of tokens issued by the SAML exchange endpoint (never past the assertion's).
    exchange_token_seconds: int = Field(900, ge=60, le=43200)

    @property
    def credential_headers(self) -> tuple[str, ...]:
        """The request headers that carry an identity: removed from flows and the audit."""
        return (self.token_header.lower(), self.saml_header.lower())


class CredentialsConfig(Strict):
    """Where the gateway's own store credentials come from. Never the YAML itself."""

    source: Literal["env", "file"] = "env"
    access_key_id_env: str = "TRACEGATE_UPSTREAM_ACCESS_KEY_ID"
    secret_access_key_env: str = "TRACEGATE_UPSTREAM_SECRET_ACCESS_KEY"
    session_token_env: str = "TRACEGATE_UPSTREAM_SESSION_TOKEN"
    # An AWS shared-credentials style INI file and the profile to read from it.
    file: str | None = None
    profile: str = "default"

    @model_validator(mode="after")
    def _file_needs_path(self) -> CredentialsConfig:
        if self.source == "file" and not self.file:
            raise ValueError("source 'file' needs 'file: PATH'")
        return self


class _Store(Strict):
    """Where the store is; the gateway reaches it with its own credentials only."""

    endpoint: str
    verify_tls: bool = True

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, endpoint: str) -> str:
        if not re.match(r"^https?://[^/]+$", endpoint.rstrip("/")):
            raise ValueError("must be http(s)://host[:port] with no path")
        return endpoint.rstrip("/")


class _SignedStore(_Store):
    """What every AWS-signed store has: its region and the gateway's own keys."""

    region: str = "us-east-1"
    credentials: CredentialsConfig = CredentialsConfig()


class UpstreamConfig(_SignedStore):
    kind: Literal["s3"]
    bucket: str

    @property
    def read_operations(self) -> frozenset[str]:
        return S3_READ_OPERATIONS


class DynamoUpstreamConfig(_SignedStore):
    """A DynamoDB (or compatible) endpoint; requests are re-signed for service `dynamodb`."""

    kind: Literal["dynamodb"]

    @property
    def read_operations(self) -> frozenset[str]:
        return DYNAMODB_READ_OPERATIONS


class SecretSource(Strict):
    """A secret the gateway reads at start-up: an environment variable or a file's content."""

    env: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if (self.env is None) == (self.file is None):
            raise ValueError("set exactly one of env: NAME or file: PATH")
        return self


_GATEWAY_HEADERS = frozenset(
    {"host", "accept", "accept-encoding", "content-type", "content-length", "connection"}
)


class HttpAuthConfig(Strict):
    """How the gateway authenticates to an HTTP store: HTTP basic or one header it sets."""

    scheme: Literal["basic", "header", "none"]
    username: SecretSource | None = None  # basic
    password: SecretSource | None = None  # basic
    header: str = "Authorization"  # header: which header carries the secret
    prefix: str = ""  # header: put before the secret, e.g. "Bearer "
    value: SecretSource | None = None  # header

    @model_validator(mode="after")
    def _fits_scheme(self) -> HttpAuthConfig:
        needed = {"basic": ("username", "password"), "header": ("value",), "none": ()}
        for name in needed[self.scheme]:
            if getattr(self, name) is None:
                raise ValueError(f"scheme {self.scheme!r} needs {name}: {{env: NAME}}")
        for name in ("username", "password", "value"):
            if name not in needed[self.scheme] and getattr(self, name) is not None:
                raise ValueError(f"{name} is not a setting for scheme {self.scheme!r}")
        if not re.match(r"^[A-Za-z0-9-]+$", self.header):
            raise ValueError(f"header {self.header!r} is not a header name")
        if self.header.lower() in _GATEWAY_HEADERS:
            raise ValueError(f"header {self.header!r} is set by the gateway itself")
        return self


_ROUTE_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
TEMPLATE_FIELD = re.compile(r"\{([^{}]*)\}")  # {name} in resource templates


class QueryParamRule(Strict):
    """What a query parameter may hold; parameters a route does not list are refused."""

    required: bool = False
    values: list[str] = []  # the only values accepted (empty: any that fits `pattern`)
    pattern: str | None = None  # a regular expression the whole value must match
    max: int | None = Field(None, ge=0)  # an integer no larger than this
    # The document field this parameter filters or sorts on (`$.userId`); `{field}` takes the
    # pattern's group named `field` (`orderBy=timestamp.asc`). A role must be able to read it.
    field: str | None = Field(None, pattern=r"^\$(\.([A-Za-z_][\w-]*|\{field\}))+$")

    @field_validator("pattern")
    @classmethod
    def _regex(cls, pattern: str | None) -> str | None:
        return _check_regex(pattern) if pattern is not None else None

    @model_validator(mode="after")
    def _field_group(self) -> QueryParamRule:
        grouped = self.pattern is not None and "field" in re.compile(self.pattern).groupindex
        if self.field and "{field}" in self.field and not grouped:
            raise ValueError("field uses {field}: give a pattern with a group (?P<field>...)")
        return self

    def named_field(self, value: str) -> tuple[str, ...] | None:
        """The document field a request names with this parameter's value, as a path."""
        if self.field is None:
            return None
        path = self.field
        if "{field}" in path:
            assert self.pattern is not None
            match = re.fullmatch(self.pattern, value)
            path = path.replace("{field}", match.group("field") if match else value)
        return tuple(path[2:].split("."))


class RouteConfig(Strict):
    """One read an HTTP store serves: how to recognise it and where its documents are."""

    operation: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    method: Literal["GET", "POST"] = "GET"
    path: str  # a template: literal segments and {name} segments, e.g. /{db}/_all_docs
    params: dict[str, str] = {}  # {name}: a regular expression the decoded segment must match
    query: dict[str, QueryParamRule] = {}
    body: Literal["none", "json"] = "none"  # json: a JSON object whose keys are in body_keys
    body_keys: list[str] = []
    # Body keys whose value names document fields, Mango-style: a selector (field names as
    # keys) or a sort (names). Each named field must be one the role may read.
    selector_keys: list[str] = []
    sort_keys: list[str] = []
    # {parameter}: claim. The path or query parameter must equal one of the token's values
    # of that claim; a missing query parameter is set to the claim's value when it has one.
    claims: dict[str, str] = {}
    # The resource policy checks against the scope's prefixes, from path (and required query)
    # parameters. Without document_resource it names one resource; with it, a range.
    resource: str
    # Each document's own resource, from parameters and document fields ({doc.field}); every
    # document whose resource is outside the scope is removed from the answer.
    document_resource: str | None = None
    documents: list[str] = Field(min_length=1)  # JSONPaths of the trace documents
    # The rest of the answer is an allow-list: only these JSONPaths are served (detector-masked);
    # any other envelope part is dropped (a store could carry another tenant's trace there).
    metadata: list[str] = []
    # Parts describing the store's whole result (totals, offsets, cursors naming its last row):
    # served only when the scope cannot have filtered the result, else dropped.
    whole_result: list[str] = []
    page_size: str | None = None  # the query parameter (or JSON body key) capped by max_limit

    @field_validator("documents", "metadata", "whole_result")
    @classmethod
    def _jsonpaths(cls, paths: list[str]) -> list[str]:
        return [_check_jsonpath(p) for p in paths]

    @field_validator("params")
    @classmethod
    def _regexes(cls, params: dict[str, str]) -> dict[str, str]:
        for pattern in params.values():
            _check_regex(pattern)
        return params

    @model_validator(mode="after")
    def _consistent(self) -> RouteConfig:
        if not self.path.startswith("/") or "?" in self.path or "//" in self.path:
            raise ValueError(f"path {self.path!r} must be an absolute path without a query")
        names = self.path_params
        if len(set(names)) != len(names):
            raise ValueError(f"path {self.path!r} names a parameter twice")
        for segment in self.path.strip("/").split("/"):
            if ("{" in segment or "}" in segment) and not _ROUTE_PARAM.match(segment):
                raise ValueError(f"path segment {segment!r}: a parameter is a whole {{name}}")
        for name in self.params:
            if name not in names:
                raise ValueError(f"params.{name}: not a parameter of path {self.path!r}")
        overlap = set(names) & set(self.query)
        if overlap:
            raise ValueError(f"{sorted(overlap)[0]!r} is both a path and a query parameter")
        for name in self.claims:
            if name not in names and name not in self.query:
                raise ValueError(f"claims.{name}: not a path or query parameter of this route")
        fixed = set(names) | {n for n, rule in self.query.items() if rule.required}
        for name in TEMPLATE_FIELD.findall(self.resource):
            if name not in fixed:
                raise ValueError(
                    f"resource: {{{name}}} is not a path parameter or required query parameter"
                )
        for name in TEMPLATE_FIELD.findall(self.document_resource or ""):
            if name not in fixed and not name.startswith("doc."):
                raise ValueError(
                    f"document_resource: {{{name}}} is neither a parameter nor a {{doc.field}}"
                )
        if self.body == "json" and self.method != "POST":
            raise ValueError("body: json needs method: POST")
        if self.method == "POST" and self.body != "json":
            raise ValueError("method POST needs body: json (and body_keys)")
        if self.body == "json" and not self.body_keys:
            raise ValueError("body_keys: list the JSON body keys this route accepts")
        if self.page_size is not None:
            where = self.body_keys if self.body == "json" else list(self.query)
            if self.page_size not in where:
                raise ValueError(f"page_size: {self.page_size!r} is not a parameter it accepts")
        return self

    @property
    def path_params(self) -> list[str]:
        return [
            m.group(1)
            for segment in self.path.strip("/").split("/")
            if (m := _ROUTE_PARAM.match(segment))
        ]


class HttpUpstreamConfig(_Store):
    """Any store with a JSON HTTP API, described by a route map; unlisted routes are refused."""

    kind: Literal["http"]
    auth: HttpAuthConfig
    # A GET the readiness check sends with the gateway's credentials (any non-error answer).
    health_path: str = Field("/", pattern=r"^/")
    max_request_body_bytes: int = 64 * 1024
    # Keys of a store's JSON error object passed on to the client (strings, shortened).
    error_keys: list[str] = ["error", "reason", "message", "code", "status"]
    routes: list[RouteConfig] = Field(min_length=1)

    @field_validator("max_request_body_bytes", mode="before")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return parse_size(value)

    @model_validator(mode="after")
    def _unique_operations(self) -> HttpUpstreamConfig:
        ops = [r.operation for r in self.routes]
        dupes = sorted({o for o in ops if ops.count(o) > 1})
        if dupes:
            raise ValueError(f"routes: operation {dupes[0]!r} is named by two routes")
        return self

    @property
    def read_operations(self) -> frozenset[str]:
        return frozenset(r.operation for r in self.routes)


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


class AuditConfig(Strict):
    path: str = "tracegate-audit.sqlite3"
    batch_max_rows: int = Field(256, ge=1)
    batch_max_wait_ms: int = Field(0, ge=0)
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


class MaskRule(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.:-]+$")
    path: str
    action: MaskAction
    # For `partial`: how many trailing characters stay visible.
    keep: int = Field(4, ge=0)

    @field_validator("path")
    @classmethod
    def _jsonpath(cls, path: str) -> str:
        return _check_jsonpath(path)


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
                _check_jsonpath(path)
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
        UpstreamConfig | DynamoUpstreamConfig | HttpUpstreamConfig, Field(discriminator="kind")
    ]
    limits: LimitsConfig = LimitsConfig()
    masking: MaskingConfig = MaskingConfig()
    audit: AuditConfig = AuditConfig()
    admin: AdminConfig = AdminConfig()
    logging: LoggingConfig = LoggingConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    purposes: dict[str, PurposeConfig] = Field(min_length=1)
    roles: dict[str, RoleConfig] = Field(min_length=1)

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


def _check_scope_for_store(
    upstream: UpstreamConfig | DynamoUpstreamConfig | HttpUpstreamConfig,
    where: str,
    scope: ScopeConfig,
) -> None:
    """Scopes name what their store has: prefixes for S3, tables for DynamoDB, routes' resource
    prefixes for an HTTP store."""
    kind, known = upstream.kind, upstream.read_operations
    what = "route of this http store" if kind == "http" else f"read the {kind} store serves"
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
        if kind != "s3" and rule.when.max_keys_over is not None:
            raise ValueError(
                f"{where}.approvals[{i}].when.max_keys_over: only for S3 listings "
                "(cap page sizes with max_limit)"
            )
    if kind == "dynamodb":
        if not scope.tables:
            raise ValueError(f"{where}.tables: list the tables this scope may read")
        extra = ["prefixes"] if scope.prefixes else []
    else:
        if not scope.prefixes:
            what = "key prefixes" if kind == "s3" else "resource prefixes (see upstream.routes)"
            raise ValueError(f"{where}.prefixes: list the {what} this scope may read")
        unsupported = ("tables", "partition", "max_limit") if kind == "s3" else ("tables",)
        extra = [n for n in unsupported if getattr(scope, n)]
    if extra:
        raise ValueError(f"{where}.{extra[0]}: not a setting for a {kind} store")


def _check_prefixes(prefixes: list[str]) -> list[str]:
    for prefix in prefixes:
        if prefix.startswith("/") or ".." in prefix.split("/") or "//" in prefix:
            raise ValueError(f"prefix {prefix!r} must be a plain key prefix like 'traces/a/'")
    return prefixes


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
    return pattern


def _check_jsonpath(path: str) -> str:
    from jsonpath_ng.exceptions import JsonPathLexerError, JsonPathParserError
    from jsonpath_ng.ext import parse

    if not path.startswith("$"):
        raise ValueError(f"JSONPath {path!r} must start with '$'")
    try:
        parse(path)
    except (JsonPathLexerError, JsonPathParserError, Exception) as exc:
        raise ValueError(f"invalid JSONPath {path!r}: {exc}") from None
    return path


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
