"""A JSON-over-HTTP store as tracegate sees it: a route map, and the documents in an answer.

The config lists every read the store serves (method, path template, query parameters, body
keys). A request that no route matches exactly is refused, and so is any query parameter or
body key its route does not list: CouchDB's `?attachments=true`, `_changes` or `_bulk_get` can
never slip through as a lookalike. Path segments are percent-decoded once, checked, and
re-encoded for the store, so what policy judged is what the store receives.

In an answer, the route's JSONPaths say where the trace documents are (`$`, `$.rows[*].doc`,
`$.data[*]`, `$.hits.hits[*]._source`); each is checked and masked on its own, and one outside
the scope takes the list element holding it (its whole row or hit) with it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from tracegate.denial import bad_request, forbidden
from tracegate.masking.paths import CompiledPath, Path, compile_path
from tracegate.resources import Outside, outside_prefixes, within_prefixes
from tracegate.stores.http_config import TEMPLATE_FIELD, RouteConfig

if TYPE_CHECKING:
    from tracegate.access import ScopeResources

_DOUBLE_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
DEFAULT_PARAM = "[^/]+"


@dataclass(frozen=True)
class HttpAccess:
    """One request matched to its route: the input to policy and to the audit row."""

    operation: str
    route: CompiledRoute = field(compare=False, repr=False)
    key: str | None = None  # the one resource a document route reads
    prefix: str | None = None  # the range a list route reads (documents are checked one by one)
    path_params: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None

    @property
    def resource(self) -> str:
        return f"http:{self.key}" if self.key is not None else f"http:{self.prefix}*"

    @property
    def params(self) -> dict[str, str]:
        return {**self.query, **self.path_params}

    def outside(self, scope: ScopeResources) -> Outside | None:
        return outside_prefixes(self.key, self.prefix, scope.prefixes)

    def within(self, prefixes: Sequence[str]) -> bool:
        return within_prefixes(self.key, self.prefix, prefixes)

    def listing_size(self, query: Sequence[tuple[str, str]]) -> int | None:
        return None  # page sizes are capped by max_limit (the route's page_size)


class CompiledRoute:
    def __init__(self, config: RouteConfig) -> None:
        self.config = config
        self.segments: list[str | tuple[str, re.Pattern[str]]] = []
        for segment in config.path.strip("/").split("/") if config.path != "/" else []:
            if segment.startswith("{"):
                name = segment[1:-1]
                self.segments.append((name, re.compile(config.params.get(name, DEFAULT_PARAM))))
            else:
                self.segments.append(segment)
        self.query_patterns = {
            name: re.compile(rule.pattern) for name, rule in config.query.items() if rule.pattern
        }
        self.documents: list[CompiledPath] = [compile_path(p) for p in config.documents]
        self.metadata: list[CompiledPath] = [compile_path(p) for p in config.metadata]
        self.whole_result: list[CompiledPath] = [compile_path(p) for p in config.whole_result]

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The path parameters if the decoded segments fit this route's template."""
        if len(segments) != len(self.segments):
            return None
        params = {}
        for given, wanted in zip(segments, self.segments, strict=True):
            if isinstance(wanted, str):
                if given != wanted:
                    return None
            else:
                name, pattern = wanted
                if not pattern.fullmatch(given):
                    return None
                params[name] = given
        return params

    def upstream_path(self, params: Mapping[str, str]) -> str:
        parts = [quote(params[s[0]], safe="") if isinstance(s, tuple) else s for s in self.segments]
        return "/" + "/".join(parts)


class RouteMap:
    """The store's routes in order; the first whose template fits a request decides it."""

    def __init__(self, routes: Sequence[RouteConfig], max_body_bytes: int) -> None:
        self.routes = [CompiledRoute(r) for r in routes]
        self.max_body_bytes = max_body_bytes

    def parse(
        self, method: str, raw_path: str, query: Sequence[tuple[str, str]], body: bytes
    ) -> HttpAccess:
        segments = decoded_segments(raw_path)
        method = method.upper()
        other_method = None
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.config.method != method:
                other_method = route
                continue
            return self._access(route, params, query, body)
        if other_method is not None:
            raise forbidden(
                f"{method} is not served on {raw_path} (route {other_method.config.operation} "
                f"takes {other_method.config.method})"
            )
        raise forbidden(f"no route serves {method} {raw_path}: unlisted requests are refused")

    def _access(
        self,
        route: CompiledRoute,
        path_params: dict[str, str],
        query: Sequence[tuple[str, str]],
        body: bytes,
    ) -> HttpAccess:
        config = route.config
        checked = check_query(route, query)
        document = self._body(config, body)
        fields = {**checked, **path_params}
        resource = render(config.resource, fields)
        single = config.document_resource is None  # else a list: documents placed one by one
        return HttpAccess(
            config.operation,
            route,
            key=resource if single else None,
            prefix=None if single else resource,
            path_params=path_params,
            query=checked,
            body=document,
        )

    def _body(self, config: RouteConfig, body: bytes) -> dict[str, Any] | None:
        if config.body == "none":
            if body:
                raise bad_request(f"{config.operation} takes no request body")
            return None
        if len(body) > self.max_body_bytes:
            raise bad_request(f"the request body is larger than {self.max_body_bytes} bytes")
        try:
            document = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise bad_request("the request body is not JSON") from None
        if not isinstance(document, dict):
            raise bad_request("the request body must be a JSON object")
        unknown = sorted(k for k in document if k not in config.body_keys)
        if unknown:
            raise forbidden(
                f"body key(s) {', '.join(unknown)} are not accepted by {config.operation} "
                f"(accepted: {', '.join(config.body_keys)})"
            )
        return document


def decoded_segments(raw_path: str) -> list[str]:
    """Split before decoding (so %2F stays inside its segment), decode once, refuse tricks."""
    if not raw_path.startswith("/"):
        raise bad_request("request target must be an absolute path")
    if raw_path == "/":
        return []
    segments = []
    for raw in raw_path[1:].split("/"):
        try:
            segment = unquote(raw, errors="strict")
        except UnicodeDecodeError:
            raise bad_request("path is not valid UTF-8 once decoded") from None
        if not segment:
            raise bad_request("path has an empty segment")
        if segment in (".", ".."):
            raise bad_request("path has a '.' or '..' segment")
        if _DOUBLE_ENCODED.search(segment):
            raise bad_request("path is percent-encoded twice")
        if "\x00" in segment or "\\" in segment:
            raise bad_request("path contains a NUL byte or a backslash")
        segments.append(segment)
    return segments


def check_query(route: CompiledRoute, query: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The query as its route allows it: listed names, once each, values that fit."""
    config = route.config
    checked: dict[str, str] = {}
    for name, value in query:
        rule = config.query.get(name)
        if rule is None:
            accepted = ", ".join(config.query) or "none"
            raise forbidden(
                f"query parameter {name!r} is not accepted by {config.operation} "
                f"(accepted: {accepted})"
            )
        if name in checked:
            raise bad_request(f"query parameter {name!r} is given twice")
        if rule.values and value not in rule.values:
            raise forbidden(f"{name}={value!r} is not accepted (allowed: {', '.join(rule.values)})")
        pattern = route.query_patterns.get(name)
        if pattern is not None and not pattern.fullmatch(value):
            raise bad_request(f"{name}={value!r} is not a valid value")
        if rule.max is not None:
            number = integer(name, value)
            if number > rule.max:
                raise forbidden(f"{name}={number} is above the route's maximum of {rule.max}")
        checked[name] = value
    missing = [n for n, rule in config.query.items() if rule.required and n not in checked]
    if missing:
        raise bad_request(f"{config.operation} needs query parameter(s) {', '.join(missing)}")
    return checked


def integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise bad_request(f"{name} must be a non-negative integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise bad_request(f"{name} must be a non-negative integer") from None
    if number < 0:
        raise bad_request(f"{name} must be a non-negative integer")
    return number


def render(template: str, fields: Mapping[str, Any]) -> str:
    """Fill a resource template; a missing field makes the whole resource unknown (KeyError)."""

    def value(match: re.Match[str]) -> str:
        found = fields[match.group(1)]
        if not isinstance(found, str | int) or isinstance(found, bool):
            raise KeyError(match.group(1))
        return str(found)

    return TEMPLATE_FIELD.sub(value, template)


def field_value(document: Any, dotted: str) -> Any:
    """`a.b.c` in a document; KeyError when any step is missing."""
    for part in dotted.split("."):
        if not isinstance(document, dict) or part not in document:
            raise KeyError(dotted)
        document = document[part]
    return document


class DocumentFields(Mapping[str, Any]):
    """Template fields for `document_resource`: the request's parameters, and `doc.x.y`."""

    def __init__(self, params: Mapping[str, str], document: Any) -> None:
        self._params, self._document = params, document

    def __getitem__(self, name: str) -> Any:
        if name.startswith("doc."):
            return field_value(self._document, name[4:])
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)


# -- documents in an answer --------------------------------------------------------------


def document_paths(route: CompiledRoute, answer: Any) -> list[Path]:
    """Where the route's documents are in this answer, each once; a match inside another
    document is part of that document (masked with it), not a document of its own."""
    found = sorted(
        {path for expression in route.documents for path in expression.paths(answer)}, key=len
    )
    outermost: list[Path] = []
    for path in found:
        if not any(path[: len(outer)] == outer for outer in outermost):
            outermost.append(path)
    return outermost


def located(expressions: Sequence[CompiledPath], answer: Any) -> list[Path]:
    """Every concrete path the expressions match in this answer."""
    return [path for expression in expressions for path in expression.paths(answer)]


def keep_only(answer: Any, keep: Sequence[Path]) -> tuple[Any, list[Path], list[Path]]:
    """The answer with only what `keep` names and the containers on the way to it. Returns the
    pruned answer, the object members dropped, and the list elements to delete afterwards
    (left in place for now, so the paths of the documents still point where they did)."""
    trie: dict[Any, Any] = {}
    for path in keep:
        node = trie
        for part in path:
            if node.get(_WHOLE):
                break
            node = node.setdefault(part, {})
        else:
            node.clear()
            node[_WHOLE] = True
    dropped: list[Path] = []
    elements: list[Path] = []

    def walk(value: Any, node: dict[Any, Any], path: Path) -> Any:
        if node.get(_WHOLE):
            return value
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if key in node:
                    out[key] = walk(item, node[key], (*path, key))
                else:
                    dropped.append((*path, key))
            return out
        if isinstance(value, list):
            kept = []
            for index, item in enumerate(value):
                if index in node:
                    kept.append(walk(item, node[index], (*path, index)))
                else:
                    kept.append(None)
                    elements.append((*path, index))
            return kept
        return value  # a scalar where the path expected a container: nothing below it to keep

    return walk(answer, trie, ()), dropped, elements


_WHOLE = object()


def get(document: Any, path: Path) -> Any:
    for part in path:
        document = document[part]
    return document


def put(document: Any, path: Path, value: Any) -> Any:
    """Set the value at `path`; returns the (new) root when `path` is the root itself."""
    if not path:
        return value
    get(document, path[:-1])[path[-1]] = value
    return document


def holder(path: Path) -> Path | None:
    """The list element holding the document at `path` (its row, its hit), or None."""
    for end in range(len(path), 0, -1):
        if isinstance(path[end - 1], int):
            return path[:end]
    return None


def remove_all(document: Any, elements: set[Path]) -> None:
    """Delete list elements, deepest and last first, so no removal shifts another."""
    for path in sorted(elements, key=lambda p: (len(p), p[-1]), reverse=True):
        del get(document, path[:-1])[path[-1]]
