"""What the console's audit pages show, read from the audit trail (`AuditReader`) and the
approval store: counts for the charts, a session's timeline, one flow with what was served."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tracegate.approvals.model import Approval
from tracegate.audit.bodies import decompress
from tracegate.audit.reader import AuditReader, Filters
from tracegate.audit.tlog import MerkleLog, SignedCheckpoint

MAX_CHART_ROWS = 200_000  # rows read for the charts, newest first beyond this
TOP = 10


def hour_of(ts: str) -> str:
    return ts[:13] + ":00:00Z" if len(ts) >= 13 else ts


def detectors_in(masks: str | None) -> Counter[str]:
    """Detector hits of one row, by detector (rule ids `detect.<name>`), never values."""
    hits: Counter[str] = Counter()
    try:
        rules = json.loads(masks or "{}").get("rules", {})
    except ValueError:
        return hits
    for rule, info in rules.items():
        if rule.startswith("detect.") and isinstance(info, dict):
            hits[rule.removeprefix("detect.")] += int(info.get("count", 0))
    return hits


@dataclass
class ChartCounts:
    over_time: list[dict[str, Any]]
    denials: list[dict[str, Any]]
    detectors: list[dict[str, Any]]
    readers: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]
    decision_minutes: list[dict[str, Any]]


def _labelled(counter: Counter[str]) -> list[dict[str, Any]]:
    return [{"label": k, "n": n} for k, n in counter.most_common(TOP)]


def chart_counts(rows: Iterable[dict[str, Any]], approvals: Iterable[Approval]) -> ChartCounts:
    per_hour: Counter[tuple[str, str]] = Counter()
    denials: Counter[str] = Counter()
    detectors: Counter[str] = Counter()
    readers: Counter[str] = Counter()
    for n, row in enumerate(rows):
        if n >= MAX_CHART_ROWS:
            break
        per_hour[(hour_of(row["ts"] or ""), row["decision"] or "?")] += 1
        if row["decision"] == "deny":
            denials[row.get("code") or f"HTTP {row['status']}"] += 1
        else:
            detectors.update(detectors_in(row.get("masks")))
            if row.get("subject") and row.get("operation"):  # a read of the store, served
                readers[row["subject"]] += 1
    outcomes: Counter[str] = Counter()
    minutes = []
    for approval in approvals:
        outcomes[approval.status] += 1
        if approval.decided_at is not None and approval.status in ("approved", "denied"):
            minutes.append({"minutes": round((approval.decided_at - approval.created_at) / 60, 2)})
    return ChartCounts(
        over_time=[{"hour": h, "decision": d, "n": n} for (h, d), n in sorted(per_hour.items())],
        denials=_labelled(denials),
        detectors=_labelled(detectors),
        readers=_labelled(readers),
        outcomes=_labelled(outcomes),
        decision_minutes=minutes,
    )


@dataclass
class FlowDetail:
    row: dict[str, Any]
    masks: list[tuple[str, str, int]]  # (rule id, action, count)
    served: str | None  # the body as served, when the trail kept it
    index: int | None  # its entry in the Merkle log


def flow_detail(reader: AuditReader, flow_id: str) -> FlowDetail | None:
    row = reader.flow(flow_id)
    if row is None:
        return None
    rules = json.loads(row.get("masks") or "{}").get("rules", {})
    masks = [
        (rule, str(info.get("action", "")), int(info.get("count", 0)))
        for rule, info in sorted(rules.items())
    ]
    body = reader.body(flow_id)
    served = None
    if body is not None and body.get("response_body") is not None:
        served = decompress(bytes(body["response_body"])).decode(errors="replace")
    found = reader.conn.execute(
        "SELECT idx FROM log_entries WHERE kind = 'flow' AND ref = ?", (row["id"],)
    ).fetchone()
    return FlowDetail(row, masks, served, int(found[0]) if found else None)


def timeline(reader: AuditReader, session_id: str) -> list[dict[str, Any]]:
    return list(reader.flows(Filters(session=session_id), limit=5000))


def latest_checkpoint(reader: AuditReader) -> SignedCheckpoint | None:
    try:
        return MerkleLog(reader.conn).latest()
    except Exception:  # a trail without a log table yet (nothing recorded)
        return None
