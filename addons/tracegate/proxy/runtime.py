"""State shared by the gateway's addons: the config version in force and each flow's progress.

Flows keep a reference to the `Gateway` they started under, so a reload never mixes two policy
versions within one flow.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from tracegate.approvals.desk import ApprovalDesk
from tracegate.approvals.notify import Webhook
from tracegate.approvals.store import ApprovalStore
from tracegate.audit import AuditLog
from tracegate.audit.keys import SigningKey
from tracegate.audit.publish import Publisher, build_sinks
from tracegate.audit.writer import ProcessAuditLog
from tracegate.config import ConfigError, GatewayConfig, load_config
from tracegate.decisionlog import DecisionLog
from tracegate.exchange import Exchange
from tracegate.gateway import Gateway
from tracegate.identity.saml import ExchangeIssuer
from tracegate.metrics import GatewayMetrics
from tracegate.sessions import SessionTracker
from tracegate.state.approvals import SharedApprovalStore
from tracegate.state.auditlog import SharedAuditLog
from tracegate.state.database import DatabaseUnavailable, SchemaTooNew, SharedDatabase, dsn_of
from tracegate.state.keys import shared_ec_key
from tracegate.state.ledger import PostgresAssertionLedger
from tracegate.state.portable import PortableConnection
from tracegate.state.sessions import SharedSessionTracker

logger = logging.getLogger(__name__)


@dataclass
class FlowState:
    gateway: Gateway
    exchange: Exchange
    forwarded: bool = False  # authorized and re-signed: may reach the store
    answered: bool = False  # the gateway itself set the response (a denial)
    oversize: bool = False  # upstream body replaced while it streams in
    safe_response: object | None = None  # the response that masking produced (or a denial)
    released: object | None = None  # the response whose audit row is durable
    # An answer holding credentials (STS): the flow carries a placeholder that saved flows and
    # views record, and the Guard puts these bytes in only as the response leaves.
    deferred_body: bytes | None = None


@dataclass
class Runtime:
    gateway: Gateway | None = None
    audit: AuditLog | SharedAuditLog | None = None
    publisher: Publisher | None = None
    config_path: Path | None = None
    # Set while the `-s` script is unloaded (e.g. a broken edit failed to reload).
    lockdown: str | None = None
    flows: dict[str, FlowState] = field(default_factory=dict)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    decisions: DecisionLog | None = None
    sessions: SessionTracker = field(default_factory=lambda: SessionTracker(900))
    approvals: ApprovalDesk | None = None
    admin_url: str = ""  # where the admin listener is reachable, once bound
    database: SharedDatabase | None = None  # state.backend postgres: what replicas share
    console: object | None = None  # the web console of the config in force (proxy.console)
    # This replica's name in the shared log and approval events (`--instance-id`).
    instance_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    @property
    def config(self) -> GatewayConfig | None:
        return self.gateway.config if self.gateway else None

    def load(self, path: str | Path) -> Gateway:
        """Validate completely, then switch; on any error the old config stays in force."""
        path = Path(path)
        config = load_config(path)
        database = self._database_for(config)
        ledger = PostgresAssertionLedger(database) if database is not None else None
        try:
            gateway = Gateway.from_config(config, ledger)
        except Exception:
            if database is not None and database is not self.database:
                database.close()
            raise
        audit_path = Path(config.audit.path)
        shared = config.audit.backend == "postgres"
        target = f"postgres:{database.where}" if shared and database else f"sqlite:{audit_path}"
        if self.audit is None or self.audit.target != target or database is not self.database:
            publisher, audit = self._audit_log(config, database)
            publisher.on_failure = lambda sink: self.metrics.checkpoint_publish_failures.labels(
                sink
            ).inc()
            publisher.start()
            audit.open()
            store = (
                SharedApprovalStore(
                    audit_path,
                    database,
                    config.audit.busy_timeout_ms,
                    instance=self.instance_id,
                    shared_audit=shared,
                )
                if database is not None
                else ApprovalStore(audit_path, config.audit.busy_timeout_ms)
            )
            store.open()
            if self.audit is not None:
                self.audit.close()
            if self.publisher is not None:
                self.publisher.close()
            if self.approvals is not None:
                self.approvals.store.close()
            self.audit = audit
            self.publisher = publisher
            self.approvals = ApprovalDesk(store, Webhook(None, 5.0), "")
            self.metrics.approvals_pending.set_function(lambda: store.pending_count)
            if isinstance(audit, SharedAuditLog):
                integrator = audit.integrator
                self.metrics.integration_lag.set_function(
                    lambda: -1.0 if integrator.lag_seconds is None else integrator.lag_seconds
                )
                self.metrics.integrating.set_function(lambda: float(integrator.leader))
        assert self.approvals is not None
        self.approvals.webhook = Webhook(
            config.approvals.webhook_url,
            config.approvals.webhook_timeout_seconds,
            buttons=config.approvals.slack.enabled,
        )
        self.approvals.link_base = self.approval_link_base(config)
        if self.decisions is None or self.decisions.target != config.logging.decisions:
            if self.decisions is not None:
                self.decisions.close()
            self.decisions = DecisionLog(config.logging.decisions)
        logging.getLogger("tracegate").setLevel(config.logging.level.upper())
        assert self.audit is not None
        self.audit.record_policy(gateway.version, config.model_dump_json())
        self.sessions.idle_seconds = config.audit.session_idle_seconds
        reloaded = self.gateway is not None
        self.gateway, self.config_path = gateway, path  # one assignment: flows see old or new
        if self.database is not database:
            old, self.database = self.database, database
            if old is not None:
                old.close()
            idle = config.audit.session_idle_seconds
            self.sessions = (
                SharedSessionTracker(database, idle)
                if database is not None
                else SessionTracker(idle)
            )
            if database is not None:
                for state in ("size", "idle", "waiting"):
                    gauge = self.metrics.database_connections.labels(state)
                    gauge.set_function(lambda s=state, d=database: d.pool_stats()[s])
        self.metrics.config_loaded(gateway.version, reload=reloaded)
        verb = "reloaded" if reloaded else "loaded"
        logger.info("tracegate: %s %s (policy version %s)", verb, path, gateway.version)
        return gateway

    def _audit_log(
        self, config: GatewayConfig, database: SharedDatabase | None
    ) -> tuple[Publisher, AuditLog | SharedAuditLog]:
        """The log this config names (not yet open) and the publisher of its checkpoints."""
        audit = config.audit
        sinks = build_sinks(audit.publish)
        dsn = database.dsn if audit.backend == "postgres" and database is not None else None
        if dsn is not None:
            publisher = Publisher(lambda: PortableConnection.connect(dsn), sinks)
        else:
            publisher = Publisher(Path(audit.path), sinks)
        signing = {
            "signing_key": SigningKey.load(audit.signing_key_file)
            if audit.signing_key_file
            else None,
            "checkpoint_every_rows": audit.checkpoint_every_rows,
            "checkpoint_every_seconds": audit.checkpoint_every_seconds,
            "origin": audit.log_origin,
            "publish": publisher if publisher.sinks else None,
        }
        if dsn is not None:
            assert database is not None
            log = SharedAuditLog(
                database,
                self.instance_id,
                audit.batch_max_rows,
                integrate_every_seconds=audit.integrate_every_seconds,
                alert_after_seconds=audit.integration_alert_seconds,
                **signing,
            )
            return publisher, log
        writer = ProcessAuditLog if audit.writer == "process" else AuditLog
        log_file = writer(
            Path(audit.path),
            audit.batch_max_rows,
            audit.batch_max_wait_ms,
            audit.busy_timeout_ms,
            **signing,
            commit_delay_ms=audit.commit_delay_ms,
            in_flight=lambda: len(self.flows),
        )
        return publisher, log_file

    def _database_for(self, config: GatewayConfig) -> SharedDatabase | None:
        """The shared database this config names: the open one if it is the same, else a new
        one, reached and migrated (start-up or the reload fails in one line if it cannot be)."""
        if config.state.backend != "postgres":
            return None
        dsn = dsn_of(config.state)
        if self.database is not None and self.database.dsn == dsn:
            return self.database
        database = SharedDatabase.from_config(config.state)
        try:
            database.open()
            # Tokens from /saml/exchange must verify on every replica: one key for all.
            ExchangeIssuer.use_key(shared_ec_key(database))
        except (DatabaseUnavailable, SchemaTooNew) as exc:
            database.close()
            raise ConfigError(f"state.backend postgres: {exc}") from None
        return database

    def approval_link_base(self, config: GatewayConfig | None = None) -> str:
        config = config or self.config
        if config is not None and config.approvals.public_url:
            return config.approvals.public_url.rstrip("/")
        return self.admin_url

    def reload(self, why: str) -> bool:
        """Load the current config file again; if it is invalid, keep the one in force."""
        if self.config_path is None:
            return False
        try:
            self.load(self.config_path)
        except Exception as exc:  # ConfigError, or a secret missing from the environment
            self.metrics.reload_failures.inc()
            message = (
                str(exc)
                if str(exc).startswith(str(self.config_path))
                else (f"{self.config_path}: {exc}")
            )
            logger.error(
                "tracegate: reload (%s) rejected, keeping the config in force: %s", why, message
            )
            return False
        return True

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()  # signs a last checkpoint, handed to the publisher
            self.audit = None
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None
        if self.approvals is not None:
            self.approvals.store.close()
            self.approvals = None
        if self.decisions is not None:
            self.decisions.close()
            self.decisions = None
        if self.database is not None:
            self.database.close()
            self.database = None
