"""Which approval rule, if any, a request (or, once masked, its response) falls under.

Plain functions over the scope's rules: the first rule whose conditions all hold applies.
Rules with response conditions (`detectors`, `response_bytes_over`) are carried past the
request and decided once the masked answer is known.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from datetime import UTC, datetime

from tracegate.access import Access
from tracegate.approvals.model import ApprovalNeed
from tracegate.config import ApprovalWhen, ScopeConfig
from tracegate.detectors import GROUPS
from tracegate.masking import MaskReport


def beyond_scope(access: Access, scope: ScopeConfig) -> bool:
    """True when the access is outside the scope's resources but inside an approval rule's
    wider prefixes (the store answers both)."""
    return access.outside(scope) is not None and access.within(scope.beyond_prefixes)


def request_need(
    scope: ScopeConfig,
    access: Access,
    query: Sequence[tuple[str, str]],
    beyond: bool,
    now: datetime | None = None,
) -> tuple[ApprovalNeed | None, list[ApprovalNeed]]:
    """The rule that holds the request now, and the response rules still to be decided."""
    now = now or datetime.now(UTC)
    later: list[ApprovalNeed] = []
    for rule in scope.approvals:
        reasons = _request_conditions(rule.when, access, query, beyond, now)
        if reasons is None:
            continue
        need = ApprovalNeed(rule, "; ".join(reasons))
        if not rule.when.on_response:
            return need, later
        later.append(need)
    return None, later


def response_need(
    candidates: Sequence[ApprovalNeed], report: MaskReport, body_bytes: int
) -> ApprovalNeed | None:
    fired = {
        rule_id.removeprefix("detect.") for rule_id in report.counts if rule_id[:7] == "detect."
    }
    for need in candidates:
        when = need.rule.when
        reasons = [need.why] if need.why else []
        if when.detectors:
            wanted = {n for name in when.detectors for n in GROUPS.get(name, [name])}
            hits = sorted(fired & wanted)
            if not hits:
                continue
            reasons.append(f"detectors fired: {', '.join(hits)}")
        if when.response_bytes_over is not None:
            if body_bytes <= when.response_bytes_over:
                continue
            reasons.append(f"response of {body_bytes} bytes (> {when.response_bytes_over})")
        return ApprovalNeed(need.rule, "; ".join(reasons))
    return None


def _request_conditions(
    when: ApprovalWhen,
    access: Access,
    query: Sequence[tuple[str, str]],
    beyond: bool,
    now: datetime,
) -> list[str] | None:
    """The reasons the request-side conditions hold, or None if one does not."""
    reasons: list[str] = []
    if when.always:
        reasons.append("every request under this purpose needs approval")
    if when.operations:
        if access.operation not in when.operations:
            return None
        reasons.append(f"operation {access.operation}")
    target = access.key if access.key is not None else (access.prefix or "")
    if when.keys:
        if not any(fnmatch.fnmatchcase(target, glob) for glob in when.keys):
            return None
        reasons.append(f"{'key' if access.key is not None else 'prefix'} {target!r}")
    if when.max_keys_over is not None:
        asked = access.listing_size(query)
        if asked is None or asked <= when.max_keys_over:
            return None
        reasons.append(f"listing of up to {asked} keys (> {when.max_keys_over})")
    if when.outside_hours is not None:
        if _within(when.outside_hours, now):
            return None
        reasons.append(f"outside hours {when.outside_hours} UTC")
    if when.beyond_scope_prefixes:
        if not beyond or not access.within(when.beyond_scope_prefixes):
            return None
        reasons.append(f"{target!r} is outside the role's normal prefixes")
    elif beyond:
        return None  # only rules that name the wider prefixes may admit such a request
    return reasons


def _within(window: str, now: datetime) -> bool:
    start, end = window.split("-")
    minute = now.hour * 60 + now.minute
    lo = int(start[:2]) * 60 + int(start[3:])
    hi = int(end[:2]) * 60 + int(end[3:])
    return lo <= minute < hi if lo <= hi else (minute >= lo or minute < hi)
