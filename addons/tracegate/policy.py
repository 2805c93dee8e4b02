"""Least privilege: which role and purpose a request acts under, and whether its access fits.

Plain functions over the config, a `Principal` and an `Access`; the gateway, the CLI and the
tests all decide through `decide`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tracegate.approvals.rules import beyond_scope
from tracegate.config import GatewayConfig, ScopeConfig
from tracegate.denial import Denial, forbidden
from tracegate.identity.principal import Principal
from tracegate.stores.adapter import Access
from tracegate.stores.dynamodb import DynamoAccess
from tracegate.stores.s3 import key_in_scope, prefix_overlaps


@dataclass(frozen=True)
class Grant:
    """What an allowed request may see: the scope of its role and purpose."""

    role: str
    purpose: str
    scope: ScopeConfig
    # Prefixes opened by an approval for a request beyond the scope's own.
    approved_prefixes: tuple[str, ...] = ()

    @property
    def prefixes(self) -> list[str]:
        return [*self.scope.prefixes, *self.approved_prefixes]

    def widened(self) -> Grant:
        return replace(self, approved_prefixes=tuple(self.scope.beyond_prefixes))


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    grant: Grant
    # Outside the scope's prefixes but inside an approval rule's: allowed only once approved.
    beyond_scope: bool = False


def roles_of(principal: Principal, config: GatewayConfig) -> list[str]:
    """Every configured role whose claim match holds for this principal."""
    matched = []
    for name, role in config.roles.items():
        values = set(principal.claim_values(role.match.claim))
        if role.match.claim == "groups" and not values:
            values = set(principal.groups)
        if values & set(role.match.any_of):
            matched.append(name)
    return matched


def choose_role(
    principal: Principal,
    config: GatewayConfig,
    requested: str | None,
    roles: list[str] | None = None,
) -> str:
    if roles is None:
        roles = roles_of(principal, config)
    if not roles:
        raise forbidden(f"subject {principal.subject!r} has no tracegate role")
    if requested:
        if requested not in roles:
            raise forbidden(f"role {requested!r} is not granted to {principal.subject!r}")
        return requested
    if len(roles) > 1:
        raise forbidden(
            f"several roles apply ({', '.join(roles)}); choose one with X-Tracegate-Role"
        )
    return roles[0]


def decide(
    principal: Principal,
    config: GatewayConfig,
    access: Access,
    purpose: str | None = None,
    role: str | None = None,
    roles: list[str] | None = None,
) -> Decision:
    """Allow the access under one role and purpose, or raise a Denial naming the reason.

    `roles` are the principal's roles when the caller already has them (see `roles_of`)."""
    role_name = choose_role(principal, config, role, roles)
    role_config = config.roles[role_name]
    purpose = purpose or role_config.default_purpose
    if purpose not in role_config.scopes:
        raise forbidden(
            f"purpose {purpose!r} is not allowed for role {role_name!r} "
            f"(allowed: {', '.join(role_config.scopes)})"
        )
    scope = role_config.scopes[purpose]
    grant = Grant(role_name, purpose, scope)
    if access.operation not in scope.operations:
        raise forbidden(
            f"{access.operation} is not allowed for role {role_name!r} with purpose {purpose!r}"
        )
    if beyond_scope(access, scope):
        reason = f"{access.operation} beyond {role_name}/{purpose} scope, subject to approval"
        return Decision(True, reason, grant, beyond_scope=True)
    _check_resource(access, scope, role_name)
    return Decision(True, f"{access.operation} within {role_name}/{purpose} scope", grant)


def outside_scope(access: Access, scope: ScopeConfig, role: str) -> Denial:
    """The refusal for an access outside the scope (used when no approval rule admits it)."""
    target = f"key {access.key!r}" if access.key is not None else f"prefix {access.prefix!r}"
    return _outside(target, scope, role)


def _check_resource(access: Access, scope: ScopeConfig, role: str) -> None:
    if isinstance(access, DynamoAccess):
        outside = [t for t in access.tables if t not in scope.tables]
        if outside:
            raise forbidden(
                f"table(s) {', '.join(outside)} outside the scope of role {role!r} (allowed: "
                f"{', '.join(scope.tables)})"
            )
        return
    if access.key is not None and not key_in_scope(access.key, scope.prefixes):
        raise _outside(f"key {access.key!r}", scope, role)
    if access.prefix is not None and not prefix_overlaps(access.prefix, scope.prefixes):
        raise _outside(f"prefix {access.prefix!r}", scope, role)


def _outside(what: str, scope: ScopeConfig, role: str) -> Denial:
    return forbidden(
        f"{what} is outside the scope of role {role!r} (allowed prefixes: "
        f"{', '.join(scope.prefixes)})"
    )
