"""State shared by the gateway's addons: the config version in force and each flow's progress.

Flows keep a reference to the `Gateway` they started under, so a reload never mixes two policy
versions within one flow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tracegate.audit import AuditLog
from tracegate.config import GatewayConfig, load_config
from tracegate.gateway import Exchange, Gateway

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


@dataclass
class Runtime:
    gateway: Gateway | None = None
    audit: AuditLog | None = None
    config_path: Path | None = None
    # Set while the `-s` script is unloaded (e.g. a broken edit failed to reload).
    lockdown: str | None = None
    flows: dict[str, FlowState] = field(default_factory=dict)

    @property
    def config(self) -> GatewayConfig | None:
        return self.gateway.config if self.gateway else None

    def load(self, path: str | Path) -> Gateway:
        """Validate completely, then switch; on any error the old config stays in force."""
        path = Path(path)
        config = load_config(path)
        gateway = Gateway.from_config(config)
        audit_path = Path(config.audit.path)
        if self.audit is None or self.audit.path != audit_path:
            audit = AuditLog(
                audit_path, config.audit.batch_max_rows, config.audit.batch_max_wait_ms
            )
            audit.open()
            if self.audit is not None:
                self.audit.close()
            self.audit = audit
        self.gateway, self.config_path = gateway, path
        logger.info("tracegate: loaded %s (policy version %s)", path, gateway.version)
        return gateway

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
            self.audit = None
