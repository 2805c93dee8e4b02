"""DynamoDB as tracegate sees it: which read a request is, its row scope, and item conversion.

Requests are `POST /` with `X-Amz-Target: DynamoDB_20120810.<Operation>` and a JSON body. Only
GetItem, BatchGetItem, Query and Scan pass; legacy parameters that bypass expressions
(`KeyConditions`, `AttributesToGet`, `QueryFilter`, `ScanFilter`) are refused so every request
can be checked. Items are typed (`{"S": ...}`, `{"N": "12"}`, `{"M": ...}`...): they are turned
into plain JSON for field policy and masking and back, each value keeping its type (a masked
number or binary becomes a string, since it no longer is one).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tracegate.denial import Denial, bad_request, forbidden
from tracegate.fieldpaths import hidden
from tracegate.resources import Outside

if TYPE_CHECKING:
    from tracegate.access import ScopeResources

TARGET_PREFIX = "DynamoDB_20120810."
DYNAMODB_READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan"})
LEGACY_PARAMETERS = ("KeyConditions", "AttributesToGet", "QueryFilter", "ScanFilter")
ERROR_PREFIX = "com.amazonaws.dynamodb.v20120810#"
CONTENT_TYPE = "application/x-amz-json-1.0"


@dataclass(frozen=True)
class DynamoAccess:
    """A DynamoDB read, parsed: the input to policy and to the audit row."""

    operation: str
    tables: tuple[str, ...]
    body: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    key: None = None  # (S3 notions, absent here)
    prefix: None = None

    @property
    def resource(self) -> str:
        return ",".join(f"dynamodb:table/{t}" for t in self.tables)

    def outside(self, scope: ScopeResources) -> Outside | None:
        """Every table read must be one the scope names (rows are scoped by `partition`)."""
        others = [t for t in self.tables if t not in scope.tables]
        if not others:
            return None
        what = f"table{'s' if len(others) > 1 else ''} {', '.join(others)}"
        return Outside(what, f"allowed: {', '.join(scope.tables)}", plural=len(others) > 1)

    def within(self, prefixes: Sequence[str]) -> bool:
        return False  # tables have no prefixes to widen a scope into

    def listing_size(self, query: Sequence[tuple[str, str]]) -> int | None:
        return None  # page sizes are capped by max_limit, not held for approval


def parse_request(method: str, path: str, target: str | None, body: bytes) -> DynamoAccess:
    if method.upper() != "POST" or path != "/":
        raise forbidden("only POST / (the DynamoDB JSON API) is served")
    if not target or not target.startswith(TARGET_PREFIX):
        raise bad_request("missing or unknown X-Amz-Target")
    operation = target[len(TARGET_PREFIX) :]
    if operation not in DYNAMODB_READ_OPERATIONS:
        raise forbidden(f"{operation} is not a read this gateway serves")
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        raise bad_request("the request body is not JSON") from None
    if not isinstance(request, dict):
        raise bad_request("the request body must be a JSON object")
    legacy = [p for p in LEGACY_PARAMETERS if p in request]
    if legacy:
        raise bad_request(
            f"legacy parameter(s) {', '.join(legacy)} are not accepted; use "
            "KeyConditionExpression, ProjectionExpression and FilterExpression"
        )
    if operation == "BatchGetItem":
        items = request.get("RequestItems")
        if not isinstance(items, dict) or not items:
            raise bad_request("BatchGetItem needs RequestItems")
        tables = tuple(sorted(items))
    else:
        table = request.get("TableName")
        if not isinstance(table, str) or not table:
            raise bad_request(f"{operation} needs TableName")
        if "IndexName" in request and not isinstance(request["IndexName"], str):
            raise bad_request("IndexName must be a string")
        tables = (table,)
    return DynamoAccess(operation, tables, request)


# -- row scope ---------------------------------------------------------------------------

_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
_EQUALS = re.compile(r"^\(?\s*([#\w.]+)\s*=\s*(:\w+)\s*\)?$")
# Attribute names in a condition: aliases (#n) and bare identifiers, not values (:v).
_NAME = re.compile(r"(?<![:\w#])#?[A-Za-z_][\w.]*")


def partition_value_of_query(request: dict[str, Any], attribute: str) -> Any:
    """The typed value the Query pins `attribute` to, or a Denial if it does not pin it."""
    expression = request.get("KeyConditionExpression")
    if not isinstance(expression, str):
        raise forbidden("Query needs a KeyConditionExpression on the partition key")
    names = request.get("ExpressionAttributeNames") or {}
    values = request.get("ExpressionAttributeValues") or {}
    if re.search(r"\bOR\b|\bNOT\b", expression, re.IGNORECASE):
        raise forbidden("the key condition may not use OR or NOT")
    naming = []  # every condition that names the partition attribute, under any alias
    for condition in _AND.split(expression.strip()):
        used = {names.get(n, n) if n.startswith("#") else n for n in _NAME.findall(condition)}
        if attribute in used:
            naming.append(condition.strip())
    if len(naming) > 1:
        raise forbidden(
            f"the key condition names {attribute} {len(naming)} times; exactly one "
            f"'{attribute} = :value' is allowed"
        )
    match = _EQUALS.match(naming[0]) if naming else None
    if match is None:
        raise forbidden(f"Query must constrain {attribute} with '=' in its KeyConditionExpression")
    placeholder = match.group(2)
    if placeholder not in values:
        raise bad_request(f"{placeholder} is not in ExpressionAttributeValues")
    return values[placeholder]


def check_keys(keys: Iterable[Any], attribute: str, allowed: dict[str, Any]) -> None:
    """GetItem/BatchGetItem keys must name the allowed partition."""
    for key in keys:
        if not isinstance(key, dict) or key.get(attribute) != allowed:
            raise forbidden(f"a requested key is outside your {attribute}")


def projection_names(request: dict[str, Any]) -> list[str] | None:
    """Top-level attribute names a ProjectionExpression asks for (None: everything)."""
    expression = request.get("ProjectionExpression")
    if not isinstance(expression, str) or not expression.strip():
        return None
    names = request.get("ExpressionAttributeNames") or {}
    out = []
    for part in expression.split(","):
        head = re.split(r"[.\[]", part.strip(), maxsplit=1)[0]
        out.append(names.get(head, head) if head.startswith("#") else head)
    return out


def narrow_projection(
    request: dict[str, Any], allowed: set[str], keep: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Drop projected attributes outside `allowed` (and add `keep`, the partition attribute,
    so returned items can be checked); returns the new request and what was removed."""
    names = request.get("ExpressionAttributeNames") or {}
    expression = request.get("ProjectionExpression")
    if not isinstance(expression, str) or not expression.strip():
        return request, []
    kept_parts, removed = [], []
    for part in expression.split(","):
        part = part.strip()
        head = re.split(r"[.\[]", part, maxsplit=1)[0]
        resolved = names.get(head, head) if head.startswith("#") else head
        if resolved in allowed or resolved == keep:
            kept_parts.append(part)
        else:
            removed.append(resolved)
    if keep and keep not in (projection_names(request) or []):
        kept_parts.append(keep)
    if not kept_parts:
        raise forbidden("every projected attribute is outside the fields this role may see")
    narrowed = {**request, "ProjectionExpression": ", ".join(kept_parts)}
    if names:  # DynamoDB refuses names that no expression uses any more
        used = " ".join(
            str(narrowed.get(e, ""))
            for e in ("ProjectionExpression", "KeyConditionExpression", "FilterExpression")
        )
        narrowed["ExpressionAttributeNames"] = {
            alias: name
            for alias, name in names.items()
            if re.search(re.escape(alias) + r"\b", used)
        }
        if not narrowed["ExpressionAttributeNames"]:
            del narrowed["ExpressionAttributeNames"]
    return narrowed, removed


# -- typed values <-> plain JSON ---------------------------------------------------------


def to_plain(value: dict[str, Any]) -> Any:
    """One typed attribute value as plain JSON (numbers as Decimal, sets as lists)."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return inner
    if kind == "N":
        return Decimal(inner)
    if kind in ("B",):
        return inner  # base64 text
    if kind == "BOOL":
        return bool(inner)
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: to_plain(v) for k, v in inner.items()}
    if kind == "L":
        return [to_plain(v) for v in inner]
    if kind == "SS" or kind == "BS":
        return list(inner)
    if kind == "NS":
        return [Decimal(n) for n in inner]
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def item_to_plain(item: dict[str, Any]) -> dict[str, Any]:
    return {name: to_plain(value) for name, value in item.items()}


def to_typed(value: Any, original: dict[str, Any] | None) -> dict[str, Any]:
    """Back to a typed value, with the original's type where the value still fits it."""
    kind = next(iter(original)) if original else None
    if kind == "M" and isinstance(value, dict):
        inner = original["M"]  # type: ignore[index]
        return {"M": {k: to_typed(v, inner.get(k)) for k, v in value.items()}}
    if kind == "L" and isinstance(value, list):
        inner = original["L"]  # type: ignore[index]
        return {
            "L": [to_typed(v, inner[i] if i < len(inner) else None) for i, v in enumerate(value)]
        }
    strings = isinstance(value, list) and value and all(isinstance(v, str) for v in value)
    if kind in ("SS", "BS") and strings:
        return {kind: list(dict.fromkeys(value))}  # masking may make members equal
    if kind == "NS" and isinstance(value, list) and value:
        if all(isinstance(v, Decimal | int | float) for v in value):
            return {"NS": [_number(v) for v in dict.fromkeys(value)]}
        return {"SS": list(dict.fromkeys(str(v) for v in value))}
    if kind == "B" and isinstance(value, str) and value == original["B"]:  # type: ignore[index]
        return {"B": value}
    return _infer(value)


def _infer(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, Decimal | int | float):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, dict):
        return {"M": {k: _infer(v) for k, v in value.items()}}
    if isinstance(value, list):
        return {"L": [_infer(v) for v in value]}
    return {"S": str(value)}


def _number(value: Decimal | int | float) -> str:
    return str(value) if not isinstance(value, float) else repr(value)


def item_to_typed(plain: dict[str, Any], original: dict[str, Any]) -> dict[str, Any]:
    return {name: to_typed(value, original.get(name)) for name, value in plain.items()}


# -- responses ---------------------------------------------------------------------------


def items_of(operation: str, response: dict[str, Any]) -> list[tuple[str | None, list]]:
    """The lists of items a response holds: (table, items) pairs, in place."""
    if operation == "GetItem":
        return [(None, [response["Item"]])] if "Item" in response else []
    if operation == "BatchGetItem":
        return list((response.get("Responses") or {}).items())
    return [(None, response.get("Items") or [])]


def error_body(denial: Denial) -> bytes:
    """DynamoDB's JSON error shape, so boto3 shows the code and the reason."""
    code = {
        "Unauthenticated": "UnrecognizedClientException",
        "AccessDenied": "AccessDeniedException",
        "InvalidRequest": "ValidationException",
    }.get(denial.code, denial.code)
    payload = {"__type": ERROR_PREFIX + code, "message": denial.reason, "Message": denial.reason}
    return json.dumps(payload).encode()


def crc32(body: bytes) -> str:
    """`x-amz-crc32`: botocore checks it and retries on a mismatch."""
    return str(zlib.crc32(body) & 0xFFFFFFFF)


def dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), default=_json_default).encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def replace_items(operation: str, response: dict[str, Any], table: str | None, items: list) -> None:
    """Put the filtered, masked items back where `items_of` found them."""
    if operation == "GetItem":
        if items:
            response["Item"] = items[0]
        else:
            response.pop("Item", None)
    elif operation == "BatchGetItem":
        response.setdefault("Responses", {})[table] = items
    else:
        response["Items"] = items
        response["Count"] = len(items)


class CursorSeal:
    """Page keys that name another tenant's row, sealed (AES-GCM, a key per process) so the
    client can go on paging without learning the key; the gateway opens it on the next call.
    A cursor from before a restart is refused with a clear message."""

    NAME = "tracegate_cursor"

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    def seal(self, key: dict[str, Any]) -> dict[str, Any]:
        import base64
        import os

        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, dumps(key), b"tracegate-dynamodb-cursor")
        return {self.NAME: {"S": base64.urlsafe_b64encode(nonce + sealed).decode()}}

    def open(self, key: Any) -> Any:
        if not (isinstance(key, dict) and set(key) == {self.NAME}):
            return key
        import base64

        from cryptography.exceptions import InvalidTag

        try:
            blob = base64.urlsafe_b64decode(key[self.NAME]["S"])
            plain = self._aead.decrypt(blob[:12], blob[12:], b"tracegate-dynamodb-cursor")
        except (InvalidTag, KeyError, TypeError, ValueError):
            raise bad_request(
                "ExclusiveStartKey is not a cursor this gateway issued (or it restarted since): "
                "start the read again"
            ) from None
        return json.loads(plain)


CURSORS = CursorSeal()


def scope_page(response: dict[str, Any], attribute: str, allowed: Any) -> None:
    """Counts and page keys of a Query or Scan page as the row scope sees them: ScannedCount
    is the kept count, and a LastEvaluatedKey in another partition is sealed."""
    if "ScannedCount" in response:
        response["ScannedCount"] = response.get("Count", 0)
    last = response.get("LastEvaluatedKey")
    if isinstance(last, dict) and last.get(attribute) != allowed:
        response["LastEvaluatedKey"] = CURSORS.seal(last)


@dataclass
class ScopedRequest:
    body: dict[str, Any]
    partition_value: Any = None
    notes: list[str] = field(default_factory=list)


def allowed_top_fields(scope: Any) -> set[str] | None:
    """Top-level attributes the scope's field allow-list names (None: no narrowing)."""
    allow = scope.fields.allow
    if allow == "all":
        return None
    names = set()
    for path in allow:
        match = re.match(r"^\$\.([A-Za-z_][\w-]*)|^\$\['([^']+)'\]", path)
        if not match:
            return None  # `$..x`, `$[*]`: cannot tell; masking still applies the allow-list
        names.add(match.group(1) or match.group(2))
    return names


_EXPRESSION_WORDS = {
    "and", "or", "not", "between", "in", "attribute_exists", "attribute_not_exists",
    "attribute_type", "begins_with", "contains", "size",
}  # fmt: skip
_PATH = re.compile(
    r"(?<![:\w#])(?:#\w+|[A-Za-z_]\w*)(?:\[\d+\])*(?:\.(?:#\w+|[A-Za-z_]\w*)(?:\[\d+\])*)*(?!\w*\()"
)


def check_filter_fields(body: dict[str, Any], scope: Any) -> None:
    """A request may only name fields the role may read: a filter or condition on a hidden
    field is an oracle (which items come back says what the field holds)."""
    names = body.get("ExpressionAttributeNames") or {}
    for key in ("FilterExpression", "ConditionExpression", "KeyConditionExpression"):
        expression = body.get(key)
        if not isinstance(expression, str):
            continue
        for match in _PATH.finditer(expression):
            raw = re.sub(r"\[\d+\]", "", match.group())
            if raw.lower() in _EXPRESSION_WORDS:
                continue
            parts = tuple(names.get(p, p) if p.startswith("#") else p for p in raw.split("."))
            if hidden([parts], scope) is not None:
                raise forbidden(f"{key} names {'.'.join(parts)}, a field your role may not read")


def scope_request(access: DynamoAccess, scope: Any, principal: Any) -> ScopedRequest:
    """The request as it may reach the store: pinned to the principal's partition, projected
    onto allowed fields, with its Limit capped. Raises Denial for what cannot be scoped."""
    body = dict(access.body)
    scoped = ScopedRequest(body)
    check_filter_fields(body, scope)
    partition = scope.partition
    if partition is not None:
        claim = principal.claim_values(partition.claim)
        if len(claim) != 1:
            raise forbidden(
                f"the token's {partition.claim!r} claim must hold exactly one value "
                f"(row scope on {partition.attribute})"
            )
        allowed = {"S": claim[0]}
        scoped.partition_value = allowed
        attribute = partition.attribute
        if access.operation == "Query":
            if body.get("IndexName"):
                raise forbidden("Query on an index is not served under a row scope")
            pinned = partition_value_of_query(body, attribute)
            if pinned != allowed:
                raise forbidden(f"Query is for another {attribute} than your {partition.claim}")
        elif access.operation == "Scan" and body.get("Select") == "COUNT":
            raise forbidden(
                "Select=COUNT on a Scan would count other tenants' rows; count the Items of a "
                "Query or Scan instead"
            )
        elif access.operation == "GetItem":
            check_keys([body.get("Key")], attribute, allowed)
        if access.operation in ("Query", "Scan") and "ExclusiveStartKey" in body:
            body["ExclusiveStartKey"] = CURSORS.open(body["ExclusiveStartKey"])
        elif access.operation == "BatchGetItem":
            for table, request in body["RequestItems"].items():
                if not isinstance(request, dict) or "AttributesToGet" in request:
                    raise bad_request(f"RequestItems.{table}: use Keys and ProjectionExpression")
                check_keys(request.get("Keys") or [], attribute, allowed)
    fields = allowed_top_fields(scope)
    keep = partition.attribute if partition is not None else None
    if fields is not None:
        if access.operation == "BatchGetItem":
            items = {}
            for table, request in body["RequestItems"].items():
                narrowed, removed = _narrow_or_set(request, fields, keep)
                items[table] = narrowed
                if removed:
                    scoped.notes.append(f"projection on {table} narrowed: {', '.join(removed)}")
            body["RequestItems"] = items
        else:
            narrowed, removed = _narrow_or_set(body, fields, keep)
            body.update(narrowed)
            if removed:
                scoped.notes.append(f"projection narrowed: {', '.join(removed)} not allowed")
    if "Limit" in body and (
        isinstance(body["Limit"], bool) or not isinstance(body["Limit"], int) or body["Limit"] < 1
    ):
        raise bad_request("Limit must be a whole number of at least 1")
    if scope.max_limit is not None and access.operation in ("Query", "Scan"):
        limit = body.get("Limit")
        if not isinstance(limit, int) or limit > scope.max_limit:
            body["Limit"] = scope.max_limit
            scoped.notes.append(f"Limit capped at {scope.max_limit}")
    return scoped


def _narrow_or_set(
    request: dict[str, Any], fields: set[str], keep: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Narrow an existing projection; without one, ask only for the allowed attributes."""
    if request.get("Select") == "COUNT":
        return request, []  # no items come back
    if request.get("Select") in ("ALL_ATTRIBUTES", "ALL_PROJECTED_ATTRIBUTES"):
        request = {k: v for k, v in request.items() if k != "Select"}
    if projection_names(request) is not None:
        return narrow_projection(request, fields, keep)
    names = dict(request.get("ExpressionAttributeNames") or {})
    parts = []
    for n, name in enumerate(sorted(fields | ({keep} if keep else set()))):
        alias = f"#tg{n}"
        names[alias] = name
        parts.append(alias)
    return {
        **request,
        "ProjectionExpression": ", ".join(parts),
        "ExpressionAttributeNames": names,
    }, []
