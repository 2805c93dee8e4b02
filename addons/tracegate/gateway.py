"""One request through tracegate, from the client's headers to the masked answer.

`Gateway` holds everything one config version needs (validator, store adapter, maskers) and exposes
two steps that the mitmproxy addons, the CLI and the tests share:

- `authorize`: identity -> access -> policy -> the signed request to send upstream;
- `respond`: the store's answer -> what the client may see (masked, filtered, headers fixed).

Each step fills in the flow's `Exchange`, from which the audit row is made, and raises a
`Denial` for anything it cannot do safely.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Mapping
from dataclasses import replace

from tracegate.approvals.rules import request_need
from tracegate.config import ConfigError, GatewayConfig
from tracegate.content import body_too_large, decode_body
from tracegate.denial import Denial, bad_request
from tracegate.exchange import (
    PURPOSE_HEADER,
    REASON_HEADER,
    ROLE_HEADER,
    ClientResponse,
    Exchange,
    IncomingRequest,
    UpstreamRequest,
)
from tracegate.identity import sigv4
from tracegate.identity.oidc import TokenValidator, bearer_token
from tracegate.identity.replay import AssertionLedger, SqliteAssertionLedger
from tracegate.identity.saml import SamlValidator
from tracegate.identity.session_credentials import CredentialSealer
from tracegate.masking import Masker
from tracegate.policy import decide, outside_scope, roles_of
from tracegate.stores.adapter import StoreAdapter
from tracegate.stores.dynamodb_adapter import DynamoStore
from tracegate.stores.http_adapter import HttpStore
from tracegate.stores.s3_adapter import S3Store
from tracegate.sts import SIGV2_FIX, StsService, load_sealer, unsigned_query
from tracegate.sts import error_body as sts_error_body

__all__ = [
    "PURPOSE_HEADER",
    "REASON_HEADER",
    "ROLE_HEADER",
    "ClientResponse",
    "Exchange",
    "Gateway",
    "IncomingRequest",
    "UpstreamRequest",
]

STORES: dict[str, type[S3Store] | type[DynamoStore] | type[HttpStore]] = {
    "s3": S3Store,
    "dynamodb": DynamoStore,
    "http": HttpStore,
}


class Gateway:
    """Decides and masks flows under one validated config version."""

    def __init__(
        self,
        config: GatewayConfig,
        store: StoreAdapter,
        hash_key: bytes | None,
        validator: TokenValidator | None = None,
        sealer: CredentialSealer | None = None,
        ledger: AssertionLedger | None = None,
    ) -> None:
        self.config = config
        self.version = config.version_hash()
        self.store = store
        self.validator = validator or TokenValidator(config.identity)
        self.sts = (
            StsService(config, self.validator, sealer)
            if config.identity.sts.enabled and sealer is not None
            else None
        )
        ledger = ledger or SqliteAssertionLedger(config.audit.path)
        self.ledger = ledger  # IDs used once: SAML assertions, Slack callbacks
        self.saml = SamlValidator(config.identity, ledger=ledger) if config.identity.saml else None
        self._maskers: dict[tuple[str, str], Masker] = {}
        for role_name, role in config.roles.items():
            for purpose, scope in role.scopes.items():
                self._maskers[(role_name, purpose)] = Masker(scope, hash_key)

    def warm_up_masking(self) -> None:
        for masker in self._maskers.values():
            masker.warm_up()

    @classmethod
    def from_config(cls, config: GatewayConfig, ledger: AssertionLedger | None = None) -> Gateway:
        """Build from a config, reading secrets from the environment; ConfigError if missing.
        `ledger`: where used SAML assertion IDs go (default: the audit database's file)."""
        store = STORES[config.upstream.kind].from_config(config)
        env = config.masking.hash_key_env
        hash_key = os.environ.get(env, "").encode() or None
        needs_hash = any(
            m.action == "hash"
            for role in config.roles.values()
            for scope in role.scopes.values()
            for m in scope.masks
        )
        if needs_hash and hash_key is None:
            raise ConfigError(
                f"masking.hash_key_env: environment variable {env} is not set (hash masks need it)"
            )
        sealer = load_sealer(config) if config.identity.sts.enabled else None
        return cls(config, store, hash_key, sealer=sealer, ledger=ledger)

    def new_exchange(self, flow_id: str, request: IncomingRequest) -> Exchange:
        return Exchange(flow_id=flow_id, request=request, policy_version=self.version)

    # -- request ---------------------------------------------------------------------

    async def authorize(self, exchange: Exchange) -> None:
        """Identity, access, policy, and whether a human must approve; raises Denial.

        `upstream_request` then makes the signed request, once any approval is given."""
        request = exchange.request
        if request.absolute_form:
            raise bad_request("absolute-form request targets are not accepted")
        if self.config.listen.require_tls and not request.tls:
            raise bad_request("plaintext HTTP is not accepted on this listener; use HTTPS")
        if self.sts is not None and StsService.is_call(request):
            await self._assume_role(exchange)
            return
        role, purpose = request.header(ROLE_HEADER), request.header(PURPOSE_HEADER)
        saml = request.header(self.config.identity.saml_header)
        via = ""
        # A token header wins: SDKs hooked to send one sign with keys tracegate ignores.
        signed = self.sts is not None and not request.header(self.config.identity.token_header)
        if signed and sigv4.sigv2_attempt(request.headers, request.query):
            raise Denial(400, "InvalidRequest", SIGV2_FIX)
        if signed and sigv4.is_sigv4(request.headers, request.query):
            assert self.sts is not None
            credentials = self.sts.authenticate(request)
            exchange.principal = credentials.principal()
            exchange.token_digest = hashlib.sha256(credentials.access_key_id.encode()).hexdigest()
            role, purpose = credentials.role, credentials.purpose  # fixed when they were minted
            request = replace(request, query=unsigned_query(request.query))
            via = f"; identity: sts credentials {credentials.access_key_id}"
            exchange.identity = f"sts {credentials.access_key_id}"
        elif saml and self.saml is not None:
            exchange.identity = "saml"
            # In a thread: the signature check is CPU work and the ledger may be a database.
            exchange.principal = await asyncio.to_thread(self.saml.validate, saml)
        else:
            exchange.identity = "oidc"
            token = bearer_token(dict(request.headers), self.config.identity.token_header)
            exchange.token_digest = hashlib.sha256(token.encode()).hexdigest()
            exchange.principal = await self.validator.validate(token)
        exchange.roles = roles_of(exchange.principal, self.config)
        exchange.access = self.store.parse(request)
        decision = decide(
            exchange.principal,
            self.config,
            exchange.access,
            purpose=purpose,
            role=role,
            roles=exchange.roles,
        )
        exchange.grant = decision.grant
        scope = decision.grant.scope
        need, later = request_need(scope, exchange.access, request.query, decision.beyond_scope)
        if decision.beyond_scope:
            if need is None:
                raise outside_scope(exchange.access, scope, decision.grant.role)
            exchange.grant = decision.grant.widened()
        exchange.approval_need, exchange.response_rules = need, later
        exchange.decision, exchange.reason = "allow", decision.reason + via
        notes = self.store.narrow(exchange)
        if notes:
            exchange.reason += "; " + "; ".join(notes)

    async def _assume_role(self, exchange: Exchange) -> None:
        """An STS call, answered here: the credentials, or STS's own error."""
        assert self.sts is not None
        exchange.sts_call = True
        exchange.identity = "sts web identity"
        answer, (principal, credentials) = await self.sts.assume_role(exchange.request)
        exchange.principal = principal
        exchange.roles = roles_of(principal, self.config)
        exchange.local_answer = answer
        exchange.decision = "allow"
        exchange.reason = (
            f"sts: credentials {credentials.access_key_id} for "
            f"{credentials.role}/{credentials.purpose} until {int(credentials.expires_at)}"
        )

    def upstream_request(self, exchange: Exchange) -> UpstreamRequest:
        """The request for the store, signed or carrying the gateway's own credentials."""
        assert exchange.access is not None
        return self.store.upstream_request(exchange)

    # -- response --------------------------------------------------------------------

    def respond(
        self, exchange: Exchange, status: int, headers: Mapping[str, str], raw_body: bytes
    ) -> ClientResponse:
        """What the client may see of the answer; raises Denial if it cannot be made safe."""
        grant = exchange.grant
        assert exchange.access is not None and grant is not None
        limit = self.config.limits.max_body_bytes
        if len(raw_body) > limit:
            raise body_too_large(limit)
        lower = {k.lower(): v for k, v in headers.items()}
        body = decode_body(raw_body, lower.get("content-encoding"), limit)
        exchange.bytes_upstream = len(body)
        exchange.upstream_sha256 = hashlib.sha256(body).hexdigest()
        base: dict[str, str | None] = {
            "content-encoding": None,
            "x-tracegate-decision": "allow",
            "x-tracegate-flow": exchange.flow_id,
            "x-tracegate-policy": self.version,
        }
        if exchange.approval is not None:
            base["x-tracegate-approval"] = str(exchange.approval["id"])
        masker = self._maskers[(grant.role, grant.purpose)]
        return self.store.respond(exchange, status, lower, body, base, masker)

    # -- denials ---------------------------------------------------------------------

    def render_denial(self, exchange: Exchange, denial: Denial) -> ClientResponse:
        """The client's answer to a refusal, in the error shape the store's clients parse."""
        if exchange.sts_call or denial.details.get("shape") == "sts":
            body, content = sts_error_body(denial, exchange.flow_id), {"content-type": "text/xml"}
        else:
            body, content = self.store.error_body(exchange, denial)
        headers: dict[str, str | None] = {
            "x-tracegate-decision": "deny",
            "x-tracegate-policy": self.version,
            "x-tracegate-reason": _header_safe(denial.reason),
            "x-tracegate-flow": exchange.flow_id,
            "cache-control": "no-store",
            **content,
        }
        if "approval_id" in denial.details:
            headers["x-tracegate-approval"] = str(denial.details["approval_id"])
        if denial.status == 401:
            headers["www-authenticate"] = 'Bearer realm="tracegate"'
        head = exchange.request.method.upper() == "HEAD"
        return ClientResponse(denial.status, body, headers, replace_headers=True, head=head)


def _header_safe(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)[:300]
