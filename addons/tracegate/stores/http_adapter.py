"""A JSON-over-HTTP store (CouchDB, Langfuse, a search cluster...) described by a route map."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from tracegate import fieldpaths
from tracegate.configbase import read_secret
from tracegate.denial import Denial, forbidden, gateway_failure
from tracegate.exchange import (
    JSON,
    ClientResponse,
    Exchange,
    IncomingRequest,
    UpstreamRequest,
    json_error,
)
from tracegate.resources import key_in_scope
from tracegate.stores import http
from tracegate.stores.adapter import StoreAdapter
from tracegate.stores.http_config import HttpUpstreamConfig, SecretSource

if TYPE_CHECKING:
    import httpx

    from tracegate.config import GatewayConfig
    from tracegate.masking import Masker

MAX_ERROR_TEXT = 200


@dataclass(frozen=True)
class ScopedHttpRead:
    path: str  # path and query, as sent to the store
    body: bytes
    # The dotted document field that must hold one of these values (row scope), if any.
    partition: tuple[str, frozenset[str]] | None = None


class HttpStore(StoreAdapter):
    kind = "http"

    def __init__(self, config: GatewayConfig, auth_headers: dict[str, str]) -> None:
        super().__init__(config)
        assert isinstance(config.upstream, HttpUpstreamConfig)
        self.upstream = config.upstream
        self.routes = http.RouteMap(config.upstream.routes, config.upstream.max_request_body_bytes)
        self._auth_headers = auth_headers
        self.secret_headers = (*StoreAdapter.secret_headers, *auth_headers)

    @classmethod
    def from_config(cls, config: GatewayConfig) -> HttpStore:
        upstream = config.upstream
        assert isinstance(upstream, HttpUpstreamConfig)
        auth = upstream.auth
        headers: dict[str, str] = {}
        if auth.scheme == "basic":
            assert auth.username is not None and auth.password is not None
            user = _secret(auth.username, "upstream.auth.username")
            password = _secret(auth.password, "upstream.auth.password")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            headers["authorization"] = f"Basic {token}"
        elif auth.scheme == "header":
            assert auth.value is not None
            headers[auth.header.lower()] = auth.prefix + _secret(auth.value, "upstream.auth.value")
        return cls(config, headers)

    def parse(self, request: IncomingRequest) -> http.HttpAccess:
        return self.routes.parse(request.method, request.path, request.query, request.body)

    def narrow(self, exchange: Exchange) -> list[str]:
        """Route claims pinned to the token, the page size capped, the row scope noted."""
        access, grant, principal = exchange.access, exchange.grant, exchange.principal
        assert isinstance(access, http.HttpAccess) and grant is not None and principal is not None
        route, scope = access.route.config, grant.scope
        query, body = dict(access.query), dict(access.body) if access.body is not None else None
        notes: list[str] = []
        named = [
            path
            for name, value in query.items()
            if (path := route.query[name].named_field(value)) is not None
        ]
        if body is not None:
            named += [
                *(p for key in route.selector_keys for p in fieldpaths.mango_fields(body.get(key))),
                *(p for key in route.sort_keys for p in fieldpaths.sort_fields(body.get(key, []))),
            ]
        secret = fieldpaths.hidden(named, scope)
        if secret is not None:
            raise forbidden(f"the request names {'.'.join(secret)}, a field your role may not read")
        for name, claim in route.claims.items():
            values = principal.claim_values(claim)
            given = access.path_params.get(name, query.get(name))
            if given is None:
                if len(values) != 1:
                    raise forbidden(f"give {name}: the token's {claim!r} claim has no single value")
                query[name] = values[0]
                notes.append(f"{name} set to the token's {claim}")
            elif given not in values:
                raise forbidden(f"{name} {given!r} is not one of the token's {claim!r} values")
        if scope.max_limit is not None and route.page_size is not None:
            target = body if body is not None else query
            asked = target.get(route.page_size)
            if asked is None or http.integer(route.page_size, asked) > scope.max_limit:
                target[route.page_size] = (
                    scope.max_limit if body is not None else str(scope.max_limit)
                )
                notes.append(f"{route.page_size} capped at {scope.max_limit}")
        partition = None
        if scope.partition is not None:
            values = principal.claim_values(scope.partition.claim)
            if not values:
                raise forbidden(
                    f"the token has no {scope.partition.claim!r} claim "
                    f"(row scope on {scope.partition.attribute})"
                )
            partition = (scope.partition.attribute, frozenset(values))
        path = access.route.upstream_path(access.path_params)
        if query:
            path += "?" + urlencode(sorted(query.items()), quote_via=quote, safe="-_.~")
        raw = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        exchange.store_state = ScopedHttpRead(path, raw, partition)
        return notes

    def upstream_request(self, exchange: Exchange) -> UpstreamRequest:
        access, read = exchange.access, exchange.store_state
        assert isinstance(access, http.HttpAccess) and isinstance(read, ScopedHttpRead)
        headers = {
            "host": self._netloc,
            "accept": JSON,
            "accept-encoding": "identity",
            **self._auth_headers,
        }
        if read.body:
            headers["content-type"] = JSON
        method = access.route.config.method
        return UpstreamRequest(
            method, self._scheme, self._host, self._port, read.path, headers, read.body
        )

    def respond(
        self,
        exchange: Exchange,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        base: dict[str, str | None],
        masker: Masker,
    ) -> ClientResponse:
        """Check and mask every document the route locates; the envelope gets detectors."""
        access, grant, read = exchange.access, exchange.grant, exchange.store_state
        assert isinstance(access, http.HttpAccess) and grant is not None
        assert isinstance(read, ScopedHttpRead)
        own = {k: v for k, v in base.items() if v is not None}
        if 300 <= status < 400:
            raise gateway_failure(f"the store answered {status} (redirects are not followed)")
        if status >= 400:
            error = self._store_error(status, body)
            error = masker.mask_envelope(error, exchange.report)  # "no user a@b.example"
            out = json.dumps(error).encode()
            return ClientResponse(status, out, {**own, "content-type": JSON}, replace_headers=True)
        if status == 204 or not body:
            return ClientResponse(status, b"", own, replace_headers=True)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != JSON and not content_type.endswith("+json"):
            raise Denial(
                502,
                "UnmaskableContent",
                f"the store answered {content_type or 'no content type'}, not JSON",
            )
        try:
            answer = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise Denial(502, "UnmaskableContent", "the store's answer is not valid JSON") from None
        answer = self._mask(exchange, access, read, answer, masker)
        out = json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()
        return ClientResponse(status, out, {**own, "content-type": JSON}, replace_headers=True)

    def _mask(
        self,
        exchange: Exchange,
        access: http.HttpAccess,
        read: ScopedHttpRead,
        answer: Any,
        masker: Masker,
    ) -> Any:
        grant, report = exchange.grant, exchange.report
        assert grant is not None
        route = access.route.config
        params = access.params
        paths = http.document_paths(access.route, answer)
        served: list[tuple[http.Path, Any]] = []
        removed: set[http.Path] = set()
        for path in paths:  # take each document out, so the envelope is masked without them
            document = http.get(answer, path)
            answer = http.put(answer, path, None)
            why = self._outside(route.document_resource, params, grant.prefixes, read, document)
            if why is None:
                served.append((path, document))
                continue
            element = http.holder(path)
            if element is None:
                raise forbidden(f"the document is outside your scope: {why}")
            removed.add(element)
        whole = (
            read.partition is None
            and not removed
            and (access.prefix is None or key_in_scope(access.prefix, grant.prefixes))
        )
        totals = http.located(access.route.whole_result, answer)
        keep = [*paths, *http.located(access.route.metadata, answer), *(totals if whole else [])]
        answer, dropped, unlisted = http.keep_only(answer, keep)
        for part in [*dropped, *unlisted]:
            report.add("whole-result" if part in totals else "envelope-unlisted", "remove", part)
        answer = masker.mask_envelope(answer, report)
        for path, document in served:
            answer = http.put(answer, path, masker.mask_document(document, report))
            report.documents += 1
        report.listing_removed += len(removed)
        http.remove_all(answer, removed | set(unlisted))
        return answer

    @staticmethod
    def _outside(
        template: str | None,
        params: Mapping[str, str],
        prefixes: list[str],
        read: ScopedHttpRead,
        document: Any,
    ) -> str | None:
        """Why a document may not be served, or None when it may."""
        if template is not None:
            try:
                resource = http.render(template, http.DocumentFields(params, document))
            except KeyError as exc:
                return f"it has no {exc.args[0]} to place it"
            if not key_in_scope(resource, prefixes):
                return f"{resource!r} is outside the allowed prefixes"
        if read.partition is not None:
            attribute, allowed = read.partition
            try:
                value = http.field_value(document, attribute)
            except KeyError:
                return f"it has no {attribute}"
            if not isinstance(value, str) or value not in allowed:
                return f"its {attribute} is not yours"
        return None

    def _store_error(self, status: int, body: bytes) -> dict[str, Any]:
        """The store's own error object, reduced to short text under the listed keys."""
        try:
            error = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            error = None
        kept: dict[str, Any] = {}
        if isinstance(error, dict):
            for key in self.upstream.error_keys:
                value = error.get(key)
                if isinstance(value, str):
                    kept[key] = value[:MAX_ERROR_TEXT]
                elif isinstance(value, int) and not isinstance(value, bool):
                    kept[key] = value
        if not kept:
            kept = {"error": "store_error", "reason": f"the store answered {status}"}
        return kept

    def error_body(self, exchange: Exchange, denial: Denial) -> tuple[bytes, dict[str, str]]:
        return json_error(denial, exchange.flow_id), {"content-type": JSON}

    async def readiness(self, client: httpx.AsyncClient) -> tuple[bool, str]:
        """A GET of `health_path` with the gateway's credentials."""
        path = self.upstream.health_path
        headers = {"accept": JSON, **self._auth_headers}
        response = await client.get(self.upstream.endpoint + path, headers=headers)
        if response.status_code in (401, 403):
            return False, f"store refused the gateway's credentials ({response.status_code})"
        if response.status_code >= 400:
            return False, f"store answered {response.status_code} at {path}"
        return True, f"store answered {response.status_code} at {path}"


def _secret(source: SecretSource, where: str) -> str:
    return read_secret(where, source.env, source.file)
