"""The console's charts: each data point is a labelled mark, and values from the trail (a
subject, a denial code: what a requester or an IdP chose) never become markup."""

from __future__ import annotations

from xml.etree import ElementTree

from tracegate.approvals.model import Approval
from tracegate.console import charts, views

HOSTILE = '<script>alert(1)</script>" onload="alert(2)'


def marks(svg: str) -> list[dict[str, str]]:
    root = ElementTree.fromstring(svg)
    return [dict(e.attrib) for e in root.iter() if e.get("aria-roledescription") == "bar"]


def test_every_count_is_one_labelled_bar():
    rows = [
        {"ts": "2026-12-01T10:05:00Z", "decision": "allow", "subject": "a@x",
         "operation": "GetObject", "status": 200,
         "masks": '{"rules": {"detect.email": {"action": "hash", "count": 3}}}'},
        {"ts": "2026-12-01T10:06:00Z", "decision": "deny", "code": "AccessDenied", "status": 403},
        {"ts": "2026-12-01T11:00:00Z", "decision": "deny", "code": None, "status": 401},
    ]  # fmt: skip
    counts = views.chart_counts(rows, [])
    assert counts.denials == [{"label": "AccessDenied", "n": 1}, {"label": "HTTP 401", "n": 1}]
    assert counts.detectors == [{"label": "email", "n": 3}]
    over_time = marks(charts.render(charts.requests_over_time(counts.over_time)))
    assert len(over_time) == 3  # (10h, allow), (10h, deny), (11h, deny)
    assert all("decision: " in m["aria-label"] for m in over_time)
    assert len(marks(charts.render(charts.denials_by_code(counts.denials)))) == 2


def test_hostile_values_stay_text():
    counts = views.chart_counts(
        [{"ts": "2026-12-01T10:00:00Z", "decision": "allow", "subject": HOSTILE,
          "operation": "GetObject", "masks": "{}", "status": 200}], [],
    )  # fmt: skip
    svg = charts.render(charts.top_readers(counts.readers))
    root = ElementTree.fromstring(svg)  # well-formed: nothing broke out of its attribute
    assert not [e for e in root.iter() if e.tag.endswith("script")]
    assert not [e for e in root.iter() if any(a.startswith("on") for a in e.attrib)]
    assert HOSTILE in marks(svg)[0]["aria-label"]  # kept, as text


def test_time_to_decision_counts_only_decided_approvals():
    def approval(status: str, decided: float | None) -> Approval:
        return Approval(
            id="apv_1", rule_id="r", phase="request", why="", required=1, approver_roles=[],
            approver_groups=[], requester_subject="s", requester_issuer="i", role="r",
            purpose="p", reason="", method="GET", path="/", query=[], operation="GetObject",
            resource="s3://b/k", request_key="k", flow_id="f", created_at=0.0, wait_until=0.0,
            pending_until=0.0, grant_seconds=0.0, status=status, decided_at=decided,
        )  # fmt: skip

    counts = views.chart_counts([], [approval("approved", 120.0), approval("pending", None),
                                     approval("expired", 600.0)])  # fmt: skip
    assert counts.decision_minutes == [{"minutes": 2.0}]
    assert {c["label"] for c in counts.outcomes} == {"approved", "pending", "expired"}
