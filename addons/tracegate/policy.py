"""Least privilege: which role and purpose a request acts under, and whether its access fits.

Plain functions over the config, a `Principal` and an `Access`; the gateway, the CLI and the
tests all decide through `decide`. Whether a resource is inside a scope is the store's answer
(`Access.outside`), so nothing here knows a store kind.
"""

from __future__ import annotations

from tracegate.access import Access
from tracegate.approvals.rules import beyond_scope
from tracegate.config import GatewayConfig, ScopeConfig
from tracegate.denial import Denial, forbidden
from tracegate.grant import Decision, Grant
from tracegate.identity.principal import Principal

__all__ = ["Decision", "Grant", "choose_role", "decide", "outside_scope", "roles_of"]


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
    outside = access.outside(scope)
    if outside is not None:
        raise forbidden(outside.refusal(role_name))
    return Decision(True, f"{access.operation} within {role_name}/{purpose} scope", grant)


def outside_scope(access: Access, scope: ScopeConfig, role: str) -> Denial:
    """The refusal for an access outside the scope (used when no approval rule admits it)."""
    outside = access.outside(scope)
    assert outside is not None, "only asked for an access beyond the scope"
    return forbidden(outside.refusal(role))
