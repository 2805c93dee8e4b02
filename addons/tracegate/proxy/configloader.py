"""Declares `tracegate_config` and loads it; an invalid file is refused, the old one stays."""

from __future__ import annotations

import asyncio
import gc
import logging

from mitmproxy import ctx, exceptions

from tracegate.config import ConfigError
from tracegate.proxy.runtime import Runtime

logger = logging.getLogger(__name__)


class ConfigLoader:
    name = "tracegate_config_loader"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._warm_up: asyncio.Task | None = None
        self._running = False

    def load(self, loader) -> None:
        loader.add_option(
            "tracegate_config", str, "", "Path of the tracegate YAML config (required)."
        )
        loader.add_option(
            "tracegate_instance",
            str,
            "",
            "This replica's name in the shared audit log and approval events "
            "(default: host name and process id).",
        )

    def configure(self, updated: set[str]) -> None:
        if "tracegate_instance" in updated and ctx.options.tracegate_instance:
            if self.runtime.gateway is not None:
                raise exceptions.OptionsError(
                    "tracegate: tracegate_instance is fixed once the gateway runs; restart it"
                )
            self.runtime.instance_id = ctx.options.tracegate_instance
        if "tracegate_config" not in updated:
            return
        path = ctx.options.tracegate_config
        if not path:
            # Checked in `running`: raising here would also fire during mitmproxy's rollback of
            # a failed load, and hide the real error behind this one.
            return
        if self.runtime.gateway is not None and str(self.runtime.config_path) == path:
            # Setting the same path again asks for a reload: an invalid file is logged and
            # counted, and the config in force stays (nothing to roll back).
            self.runtime.reload("option set")
            return
        if self._running:
            # From mitmweb or the `set` command: another file would be another policy (every
            # role widened at once). Only the file in force may be reloaded while running.
            logger.warning("tracegate: refused to switch the config to %s while running", path)
            raise exceptions.OptionsError(
                f"tracegate: tracegate_config can only reload {self.runtime.config_path} while "
                "the gateway runs; restart it to use another file"
            )
        try:
            self.runtime.load(path)
        except ConfigError as exc:
            logger.error("tracegate: config rejected: %s", exc)
            raise exceptions.OptionsError(f"tracegate: {exc}") from None
        except Exception as exc:
            logger.error("tracegate: cannot start with %s: %s", path, exc)
            raise exceptions.OptionsError(f"tracegate: {path}: {exc}") from None

    def running(self) -> None:
        self._running = True
        if self.runtime.gateway is None:
            self.runtime.lockdown = "no config loaded: set tracegate_config=PATH"
            logger.error("tracegate: no config loaded: set tracegate_config=PATH")
            return
        # Blocking work first, before any fetch is in flight (a JWKS fetch started earlier
        # would count this time against its timeout).
        try:
            self.runtime.gateway.warm_up_masking()
        except Exception as exc:  # a warning, not a start-up failure: each flow tries again
            logger.warning("tracegate: masking warm-up failed (flows fail closed): %s", exc)
        # What start-up built (modules, detector dictionaries, compiled rules) lives as long
        # as the process: the cyclic GC need never walk it again. Its full collections took
        # ~90 ms each in a gateway (about 0.3 ms per flow under load) before this.
        gc.collect()
        gc.freeze()
        logger.info(
            "tracegate: masking warmed up; %d start-up objects left out of the cyclic GC",
            gc.get_freeze_count(),
        )
        # Fetch keys in the background: mitmproxy treats errors logged before `running`
        # returns as start-up failures, and flows may already be arriving.
        task = asyncio.get_running_loop().create_task(self.runtime.gateway.validator.warm_up())
        self._warm_up = task

    def done(self) -> None:
        self.runtime.close()
