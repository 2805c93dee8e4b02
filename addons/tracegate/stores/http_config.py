"""The HTTP store kind's config: the gateway's credentials for it and its route map.

A route map lists every read the store serves (see `stores/http.py`, which applies it).
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tracegate.configbase import StoreEndpoint, Strict, check_jsonpath, check_regex, parse_size


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
        return check_regex(pattern) if pattern is not None else None

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
        return [check_jsonpath(p) for p in paths]

    @field_validator("params")
    @classmethod
    def _regexes(cls, params: dict[str, str]) -> dict[str, str]:
        for pattern in params.values():
            check_regex(pattern)
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


class HttpUpstreamConfig(StoreEndpoint):
    """Any store with a JSON HTTP API, described by a route map; unlisted routes are refused."""

    scope_resource_words: ClassVar[str] = "resource prefixes (see upstream.routes)"
    scope_settings: ClassVar[frozenset[str]] = frozenset({"partition", "max_limit"})
    operation_words: ClassVar[str] = "route of this http store"

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
