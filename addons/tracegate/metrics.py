"""Prometheus metrics for the gateway, in a registry of its own.

Labels are bounded by the config (role, purpose, rule ids) or by the code (operation, decision,
denial code, token failure category): never a token, a subject, a key or a trace id.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from tracegate.exchange import Exchange

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SIZE_BUCKETS = (1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class GatewayMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "tracegate_requests",
            "Requests by decision, role, purpose and operation",
            ["decision", "role", "purpose", "operation"],
            registry=r,
        )
        self.denials = Counter(
            "tracegate_denials", "Denied requests by denial code", ["code"], registry=r
        )
        self.masks = Counter(
            "tracegate_masks_applied", "Values masked, by rule or detector", ["type"], registry=r
        )
        self.token_failures = Counter(
            "tracegate_token_failures", "Rejected identity tokens by reason", ["reason"], registry=r
        )
        self.checkpoint_publish_failures = Counter(
            "tracegate_checkpoint_publish_failures",
            "Signed checkpoints a sink (directory, witness, object lock) did not take",
            ["sink"],
            registry=r,
        )
        self.approvals_pending = Gauge(
            "tracegate_approvals_pending", "Approvals waiting for a decision", registry=r
        )
        self.database_connections = Gauge(
            "tracegate_database_connections",
            "The shared database's connection pool (state.backend postgres): its size, the "
            "connections idle in it, and the requests waiting for one",
            ["state"],
            registry=r,
        )
        self.integration_lag = Gauge(
            "tracegate_audit_integration_lag_seconds",
            "audit.backend postgres: how long the oldest committed audit row has waited for "
            "the integrator to put it in the Merkle log (-1: could not be measured)",
            registry=r,
        )
        self.integrating = Gauge(
            "tracegate_audit_integrator",
            "audit.backend postgres: 1 if this replica is the one integrating the shared log",
            registry=r,
        )
        self.request_seconds = Histogram(
            "tracegate_request_seconds", "Whole request", buckets=LATENCY_BUCKETS, registry=r
        )
        self.upstream_seconds = Histogram(
            "tracegate_upstream_seconds", "Store round trip", buckets=LATENCY_BUCKETS, registry=r
        )
        self.masking_seconds = Histogram(
            "tracegate_masking_seconds", "Masking a response", buckets=LATENCY_BUCKETS, registry=r
        )
        self.body_bytes = Histogram(
            "tracegate_body_bytes",
            "Body sizes: from the store and returned to the client",
            ["direction"],
            buckets=SIZE_BUCKETS,
            registry=r,
        )
        self.audit_write_seconds = Histogram(
            "tracegate_audit_write_seconds",
            "Waiting for an audit row to be durable",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audit_failures = Counter(
            "tracegate_audit_write_failures", "Audit rows that could not be written", registry=r
        )
        self.config_info = Gauge(
            "tracegate_config_info",
            "The policy version in force (value 1)",
            ["version"],
            registry=r,
        )
        self.reloads = Counter("tracegate_config_reloads", "Successful config reloads", registry=r)
        self.reload_failures = Counter(
            "tracegate_config_reload_failures", "Config reloads refused as invalid", registry=r
        )
        self._version: str | None = None

    def config_loaded(self, version: str, reload: bool) -> None:
        if self._version is not None:
            self.config_info.remove(self._version)
        self.config_info.labels(version).set(1)
        self._version = version
        if reload:
            self.reloads.inc()

    def record_flow(self, exchange: Exchange, audit_seconds: float | None) -> None:
        grant, access = exchange.grant, exchange.access
        self.requests.labels(
            exchange.decision,
            grant.role if grant else "",
            grant.purpose if grant else "",
            access.operation if access else "",
        ).inc()
        self.request_seconds.observe(time.monotonic() - exchange.started)
        if exchange.decision == "deny" and exchange.denial_code:
            self.denials.labels(exchange.denial_code).inc()
            if exchange.denial_code == "Unauthenticated":
                self.token_failures.labels(exchange.denial_category or "invalid").inc()
        if exchange.decision == "allow":
            for rule, count in exchange.report.counts.items():
                self.masks.labels(rule).inc(count)
        if exchange.upstream_seconds is not None:
            self.upstream_seconds.observe(exchange.upstream_seconds)
        if exchange.masking_seconds is not None:
            self.masking_seconds.observe(exchange.masking_seconds)
        if exchange.bytes_upstream is not None:
            self.body_bytes.labels("upstream").observe(exchange.bytes_upstream)
        if exchange.bytes_returned is not None:
            self.body_bytes.labels("returned").observe(exchange.bytes_returned)
        if audit_seconds is not None:
            self.audit_write_seconds.observe(audit_seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
