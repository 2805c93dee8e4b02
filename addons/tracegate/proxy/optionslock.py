"""Keeps mitmproxy's options from weakening the gateway, at start-up and from mitmweb.

Some options are forced to safe values (no streaming, no WebSocket passthrough, lazy upstream
connections, a body size limit); once the proxy runs, every option outside a short list of
display settings is frozen. A refused change raises OptionsError, which mitmproxy rolls back.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, exceptions

from tracegate.proxy.runtime import Runtime

logger = logging.getLogger(__name__)

# Options an operator may still change while the gateway runs: display and interception only.
ADJUSTABLE_PREFIXES = ("console_", "view_", "web_", "dumper_", "intercept")
ADJUSTABLE = frozenset(
    {
        "termlog_verbosity",
        "flow_detail",
        "showhost",
        "content_view_lines_cutoff",
        "tracegate_config",  # validated by ConfigLoader before it takes effect
        "server_replay_kill_extra",
    }
)
# Options that must never hold anything but these values.
REFUSED_IF_SET = {
    "stream_large_bodies": None,
    "ssl_insecure": False,
    "upstream_auth": None,
    "map_remote": [],
    "map_local": [],
    "modify_body": [],
    "modify_headers": [],
    "allow_hosts": [],
    "ignore_hosts": [],
    "tcp_hosts": [],
    "udp_hosts": [],
    "server_replay": [],
}
# keep_host_header: the client's Host reaches the addons (SigV4 covers it, and a
# virtual-hosted request names its bucket there); the store gets the gateway's own Host anyway.
FORCED = {
    "websocket": False,
    "connection_strategy": "lazy",
    "anticomp": False,
    "keep_host_header": True,
}


def backstop_body_limit(max_body_bytes: int) -> str:
    """mitmproxy's own limit sits above ours, so our check (with a JSON denial) comes first."""
    return f"{max_body_bytes * 2 + 1024 * 1024}b"


class OptionsLock:
    name = "tracegate_options_lock"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.frozen: dict[str, Any] | None = None

    def configure(self, updated: set[str]) -> None:
        if self.frozen is not None:
            self._refuse_runtime_changes(updated)
            return
        config = self.runtime.config
        for name, safe in REFUSED_IF_SET.items():
            if name == "ssl_insecure" and config is not None and not config.upstream.verify_tls:
                continue
            if name in updated and name in ctx.options and _value(name) != safe:
                raise exceptions.OptionsError(
                    f"tracegate: option {name} would weaken the gateway and is not allowed"
                )
        self._force()

    def _force(self) -> None:
        wanted: dict[str, Any] = {k: v for k, v in FORCED.items() if k in ctx.options}
        config = self.runtime.config
        if config is not None:
            wanted["body_size_limit"] = backstop_body_limit(config.limits.max_body_bytes)
            wanted["ssl_insecure"] = not config.upstream.verify_tls
            wanted["tcp_timeout"] = config.limits.upstream_timeout_seconds
        changes = {k: v for k, v in wanted.items() if _value(k) != v}
        if changes:
            ctx.options.update(**changes)

    def _refuse_runtime_changes(self, updated: set[str]) -> None:
        assert self.frozen is not None
        for name in sorted(updated):
            if name not in self.frozen or _adjustable(name):
                continue
            if _value(name) != self.frozen[name]:
                logger.warning("tracegate: refused a change of option %s while running", name)
                raise exceptions.OptionsError(
                    f"tracegate: option {name} is locked while the gateway runs"
                )

    def running(self) -> None:
        self._force()
        self.frozen = {name: _value(name) for name in ctx.options.keys()}  # noqa: SIM118 (OptManager is not iterable)


def _adjustable(name: str) -> bool:
    return name in ADJUSTABLE or name.startswith(ADJUSTABLE_PREFIXES)


def _value(name: str) -> Any:
    return getattr(ctx.options, name)
