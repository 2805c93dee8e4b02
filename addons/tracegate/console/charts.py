"""The auditor's charts as Vega-Lite specifications, drawn to SVG on the server by vl-convert
(the Vega project's own renderer): the pages need no chart script, nothing from a CDN, and the
browser gets plain SVG marks, each data point labelled (`aria-label`) with its values.

Each function takes counts already made from the audit rows (`console.views`) and returns a
spec; `render` turns one into SVG.
"""

from __future__ import annotations

from typing import Any

import vl_convert

SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"
WIDTH, HEIGHT = 420, 220
DECISION_COLORS = {"domain": ["allow", "deny"], "range": ["#4c78a8", "#e45756"]}


def _base(title: str, values: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "$schema": SCHEMA,
        "title": title,
        "width": WIDTH,
        "height": HEIGHT,
        "data": {"values": values},
        "config": {"view": {"stroke": None}},
    }


def requests_over_time(counts: list[dict[str, Any]]) -> dict[str, Any]:
    """counts: {hour: ISO time, decision, n}."""
    spec = _base("Requests over time, by decision", counts)
    spec.update(
        mark={"type": "bar", "tooltip": True},
        encoding={
            "x": {"field": "hour", "type": "temporal", "timeUnit": "yearmonthdatehours",
                  "title": "hour (UTC)"},
            "y": {"field": "n", "type": "quantitative", "aggregate": "sum", "title": "requests"},
            "color": {"field": "decision", "type": "nominal", "scale": DECISION_COLORS},
        },
    )  # fmt: skip
    return spec


def _bars(title: str, counts: list[dict[str, Any]], what: str, color: str) -> dict[str, Any]:
    spec = _base(title, counts)
    spec.update(
        mark={"type": "bar", "color": color, "tooltip": True},
        encoding={
            "y": {"field": "label", "type": "nominal", "sort": "-x", "title": what},
            "x": {"field": "n", "type": "quantitative", "title": "count"},
        },
    )
    return spec


def denials_by_code(counts: list[dict[str, Any]]) -> dict[str, Any]:
    return _bars("Denials by code", counts, "code", "#e45756")


def detector_hits(counts: list[dict[str, Any]]) -> dict[str, Any]:
    return _bars("Detector hits by type (values masked)", counts, "detector", "#72b7b2")


def top_readers(counts: list[dict[str, Any]]) -> dict[str, Any]:
    return _bars("Top readers (requests served)", counts, "subject", "#54a24b")


def approvals_by_outcome(counts: list[dict[str, Any]]) -> dict[str, Any]:
    return _bars("Approvals by outcome", counts, "outcome", "#f58518")


def time_to_decision(minutes: list[dict[str, Any]]) -> dict[str, Any]:
    """minutes: {minutes: float} per decided approval."""
    spec = _base("Time to decision (decided approvals)", minutes)
    spec.update(
        mark={"type": "bar", "color": "#b279a2", "tooltip": True},
        encoding={
            "x": {"field": "minutes", "type": "quantitative", "bin": {"maxbins": 20},
                  "title": "minutes from request to decision"},
            "y": {"aggregate": "count", "type": "quantitative", "title": "approvals"},
        },
    )  # fmt: skip
    return spec


def render(spec: dict[str, Any]) -> str:
    """The chart as an SVG document (blocking: call it off the event loop)."""
    return vl_convert.vegalite_to_svg(spec)
