"""tracegate as an STS endpoint, so S3 tools work with no code change.

A client holding an OIDC token (`AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN`) calls
AssumeRoleWithWebIdentity on the gateway's own origin; the token is validated like a bearer
token, `RoleArn` names a tracegate role its claims allow, `RoleSessionName` a purpose of that
role (else the role's default), and the answer is temporary credentials whose session token
seals who they belong to (`identity/session_credentials.py`). Every S3 request signed with
them is then checked here (`identity/sigv4.py`) and goes through the same policy, masking,
approvals and audit as a bearer token. Errors come in STS's own XML shape and codes.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from tracegate.config import ConfigError, GatewayConfig
from tracegate.denial import Denial
from tracegate.exchange import ClientResponse, IncomingRequest
from tracegate.identity import sigv4
from tracegate.identity.oidc import TokenValidator
from tracegate.identity.session_credentials import (
    CredentialError,
    CredentialSealer,
    SessionCredentials,
    parse_keys,
)
from tracegate.policy import roles_of
from tracegate.stores.s3 import virtual_bucket

STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
ACTION = "AssumeRoleWithWebIdentity"
VERSION = "2011-06-15"
MIN_DURATION = 900
MAX_FORM_BYTES = 64 * 1024
_SESSION_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+=,.@-")
SIGV2_FIX = (
    "SigV2 signatures are not accepted: sign with SigV4 (AWS config: "
    "`s3 =\\n    signature_version = s3v4`; boto3: Config(signature_version='s3v4'))"
)


def sts_error(status: int, code: str, message: str) -> Denial:
    return Denial(status, code, message, details={"shape": "sts"})


def error_body(denial: Denial, request_id: str) -> bytes:
    kind = "Receiver" if denial.status >= 500 else "Sender"
    return (
        f'<ErrorResponse xmlns="{STS_NS}"><Error><Type>{kind}</Type>'
        f"<Code>{escape(denial.code)}</Code><Message>{escape(denial.reason)}</Message></Error>"
        f"<RequestId>{escape(request_id)}</RequestId></ErrorResponse>"
    ).encode()


class StsRefused(Exception):
    """An STS error answer: its code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def read_answer(xml: bytes | str) -> dict[str, str]:
    """AccessKeyId, SecretAccessKey, SessionToken and Expiration of an AssumeRoleWithWebIdentity
    answer; StsRefused for an STS error, ValueError for anything else."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        raise ValueError("not STS XML") from None
    ns = {"sts": STS_NS}
    if root.tag == f"{{{STS_NS}}}ErrorResponse":
        code = root.findtext(".//sts:Error/sts:Code", default="?", namespaces=ns)
        message = root.findtext(".//sts:Error/sts:Message", default="", namespaces=ns)
        raise StsRefused(code, message)
    credentials = root.find(".//sts:Credentials", ns)
    if credentials is None:
        raise ValueError("the STS answer holds no Credentials")
    fields = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")
    return {f: credentials.findtext(f"sts:{f}", default="", namespaces=ns) for f in fields}


def load_sealer(config: GatewayConfig) -> CredentialSealer:
    """The session keys, read at start-up: a missing or bad key stops start-up in one line."""
    sts = config.identity.sts
    where = (
        f"identity.sts: {sts.keys_file}"
        if sts.keys_file
        else f"identity.sts.keys_env: {sts.keys_env}"
    )
    if sts.keys_file:
        try:
            text = Path(sts.keys_file).read_text()
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    else:
        text = os.environ.get(sts.keys_env, "")
        if not text:
            raise ConfigError(f"{where} is not set (KEY_ID:BASE64 of 32 random bytes)")
    try:
        return CredentialSealer(parse_keys(text))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


class StsService:
    def __init__(
        self, config: GatewayConfig, validator: TokenValidator, sealer: CredentialSealer
    ) -> None:
        self.config = config
        self.sts = config.identity.sts
        self.validator = validator
        self.sealer = sealer
        self._roles_by_arn = {self.sts.arn_of(role): role for role in config.roles}
        # The claims a credential must carry for policy to judge its requests later.
        self._claims = {role.match.claim for role in config.roles.values()} | {"groups"}

    # -- AssumeRoleWithWebIdentity -----------------------------------------------------

    @staticmethod
    def is_call(request: IncomingRequest) -> bool:
        if request.method.upper() != "POST" or request.path != "/":
            return False
        if "authorization" in request.headers:
            return False
        return any(name == "Action" for name, _ in _params(request))

    async def assume_role(self, request: IncomingRequest) -> tuple[ClientResponse, Any]:
        """The credentials' XML answer, and the principal they were issued to."""
        params = dict(_params(request))
        for name in ("Action", "Version", "RoleArn", "RoleSessionName", "WebIdentityToken"):
            if not params.get(name):
                raise sts_error(400, "MissingParameter", f"The request must contain {name}")
        if params["Action"] != ACTION:
            raise sts_error(400, "InvalidAction", f"only {ACTION} is served here")
        if params["Version"] != VERSION:
            raise sts_error(400, "InvalidParameterValue", f"Version must be {VERSION}")
        session = params["RoleSessionName"]
        if not 2 <= len(session) <= 64 or not set(session) <= _SESSION_NAME:
            raise sts_error(400, "ValidationError", "RoleSessionName must be 2-64 of [\\w+=,.@-]")
        try:
            principal = await self.validator.validate(params["WebIdentityToken"])
        except Denial as denial:
            if denial.category == "expired":
                raise sts_error(400, "ExpiredTokenException", "Token expired") from None
            if denial.status >= 500:
                raise sts_error(400, "IDPCommunicationError", denial.reason) from None
            raise sts_error(400, "InvalidIdentityToken", denial.reason) from None
        role = self._roles_by_arn.get(params["RoleArn"])
        if role is None:
            raise sts_error(
                403, "AccessDenied", f"no tracegate role answers to {params['RoleArn']}"
            )
        if role not in roles_of(principal, self.config):
            raise sts_error(
                403, "IDPRejectedClaim", f"the token's claims do not grant role {role!r}"
            )
        role_config = self.config.roles[role]
        purpose = session if session in role_config.scopes else role_config.default_purpose
        if purpose not in role_config.scopes:
            raise sts_error(403, "AccessDenied", f"role {role!r} has no purpose {purpose!r}")
        expires = self._expiry(params.get("DurationSeconds"), principal.expires_at)
        claims = {c: principal.claims[c] for c in self._claims if c in principal.claims}
        credentials, token = self.sealer.mint(principal, role, purpose, expires, claims)
        body = self._answer(credentials, token, principal, params["RoleArn"], session)
        return ClientResponse(200, body, {"content-type": "text/xml"}, replace_headers=True), (
            principal,
            credentials,
        )

    def _expiry(self, asked: str | None, token_expires: float | None) -> float:
        try:
            seconds = int(asked) if asked else self.sts.max_duration_seconds
        except ValueError:
            raise sts_error(400, "ValidationError", "DurationSeconds must be a number") from None
        if not MIN_DURATION <= seconds <= 43200:
            raise sts_error(400, "ValidationError", "DurationSeconds must be 900-43200")
        until = time.time() + min(seconds, self.sts.max_duration_seconds)
        if token_expires is not None and not self.sts.beyond_token_expiry:
            until = min(until, token_expires)  # the token's exp, epoch seconds
        return until

    def _answer(
        self,
        credentials: SessionCredentials,
        token: str,
        principal: Any,
        role_arn: str,
        session: str,
    ) -> bytes:
        expiration = datetime.fromtimestamp(credentials.expires_at, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        assumed = f"arn:aws:sts::{self.sts.account_id}:assumed-role/{credentials.role}/{session}"
        audience = principal.claims.get("aud", "")
        audience = audience[0] if isinstance(audience, list) and audience else audience
        e = escape
        return (
            f'<AssumeRoleWithWebIdentityResponse xmlns="{STS_NS}">'
            "<AssumeRoleWithWebIdentityResult>"
            f"<SubjectFromWebIdentityToken>{e(principal.subject)}</SubjectFromWebIdentityToken>"
            f"<Audience>{e(str(audience))}</Audience>"
            f"<AssumedRoleUser><Arn>{e(assumed)}</Arn>"
            f"<AssumedRoleId>AROA{credentials.access_key_id[4:]}:{e(session)}</AssumedRoleId>"
            "</AssumedRoleUser>"
            f"<Credentials><AccessKeyId>{credentials.access_key_id}</AccessKeyId>"
            f"<SecretAccessKey>{e(credentials.secret_access_key)}</SecretAccessKey>"
            f"<SessionToken>{e(token)}</SessionToken>"
            f"<Expiration>{expiration}</Expiration></Credentials>"
            f"<Provider>{e(principal.issuer)}</Provider>"
            "</AssumeRoleWithWebIdentityResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</AssumeRoleWithWebIdentityResponse>"
        ).encode()

    # -- SigV4 on S3 requests ----------------------------------------------------------

    def authenticate(self, request: IncomingRequest) -> SessionCredentials:
        """The credentials that signed this request, once its signature holds."""
        query = sigv4.split_query(request.raw_query)
        signed = sigv4.parse(dict(request.headers), query)
        if signed.service != "s3" or signed.region != self.sts.region:
            raise sigv4.SignatureError(
                400,
                "AuthorizationHeaderMalformed",
                f"the credential scope must be {self.sts.region}/s3",
            )
        if not signed.security_token:
            raise sigv4.SignatureError(
                403, "InvalidAccessKeyId", "these credentials need X-Amz-Security-Token"
            )
        sigv4.check_time(signed, datetime.now(UTC))
        try:
            credentials = self.sealer.open(signed.access_key_id, signed.security_token)
        except CredentialError as exc:
            status = 400 if exc.code == "ExpiredToken" else 403
            raise sigv4.SignatureError(status, exc.code, exc.message) from None
        if not addressed_to(request.host, self.sts.public_host or ""):
            raise sigv4.SignatureError(
                403,
                "SignatureDoesNotMatch",
                f"the request is addressed to {request.host!r}, not to this gateway's "
                f"identity.sts.public_host {self.sts.public_host!r} (or <bucket>.<public_host>)",
            )
        values = _header_values(request)
        sigv4.verify(
            request.method,
            request.path,
            query,
            values,
            signed,
            credentials.secret_access_key,
        )
        if credentials.role not in self.config.roles or (
            credentials.purpose not in self.config.roles[credentials.role].scopes
        ):
            raise sigv4.SignatureError(
                403,
                "InvalidAccessKeyId",
                "the role or purpose of these credentials is no longer configured",
            )
        return credentials


def unsigned_query(query: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The query without a presigned URL's signature parameters (what the store is asked)."""
    return tuple((n, v) for n, v in query if n.lower() not in sigv4.PRESIGN_PARAMS)


def _params(request: IncomingRequest) -> list[tuple[str, str]]:
    """STS parameters from the form body or the query string (clients use both)."""
    pairs = list(request.query)
    content = request.headers.get("content-type", "")
    if request.body and content.startswith("application/x-www-form-urlencoded"):
        if len(request.body) > MAX_FORM_BYTES:
            raise sts_error(400, "ValidationError", "the request body is too large")
        pairs += parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    return pairs


def addressed_to(host: str, public_host: str) -> bool:
    """The request names the gateway: path style (`public_host`) or virtual-hosted
    (`<bucket>.<public_host>`); a signature made for any other host is not for us."""
    return host.lower() == public_host.lower() or virtual_bucket(host, public_host) is not None


def _header_values(request: IncomingRequest) -> Any:
    """Each signed header's values as the client sent them (`host` is HTTP/2's :authority
    too, which mitmproxy keeps apart from the headers)."""
    lists: Mapping[str, list[str]] = request.header_lists()

    def values(name: str) -> list[str]:
        if name == "host":
            return [request.host] if request.host else list(lists.get(name, []))
        return list(lists.get(name, []))

    return values
