"""The thin mitmproxy layer: one addon per step, each its own chain entry, the Guard last.

`gateway_addons` is what `tracegate run` registers on its master. `attach` is what the `-s`
script calls: it registers the same addons directly on the master (so they are not hot-reloaded
with the script) and `detach` puts the gateway in lockdown while the script is unloaded.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import exceptions, hooks

from tracegate.proxy import declaredsize
from tracegate.proxy.admin import AdminListener
from tracegate.proxy.approvalhold import ApprovalHold
from tracegate.proxy.auditrecorder import AuditRecorder
from tracegate.proxy.configloader import ConfigLoader
from tracegate.proxy.configwatcher import ConfigWatcher
from tracegate.proxy.guard import Guard
from tracegate.proxy.optionslock import OptionsLock
from tracegate.proxy.requestgate import RequestGate
from tracegate.proxy.responsefilter import ResponseFilter
from tracegate.proxy.runtime import Runtime
from tracegate.proxy.storeservername import StoreServerName

logger = logging.getLogger(__name__)

SCRIPT_UNLOADED = (
    "the tracegate script is unloaded (a reload failed?); fix it or restart the gateway"
)


def gateway_addons(runtime: Runtime) -> list[object]:
    approvals = ApprovalHold(runtime)
    return [
        ConfigLoader(runtime),
        ConfigWatcher(runtime),
        AdminListener(runtime),
        OptionsLock(runtime),
        StoreServerName(),
        approvals,
        RequestGate(runtime, approvals),
        ResponseFilter(runtime, approvals),
        AuditRecorder(runtime),
        Guard(runtime),
    ]


def install(master, runtime: Runtime) -> list[object]:
    """Register the addons; the OptionsLock goes first so it refuses a change before the
    proxy server (or anything else) reacts to it."""
    declaredsize.install()
    addons = gateway_addons(runtime)
    master.addons.add(*addons)
    lock = next(a for a in addons if isinstance(a, OptionsLock))
    master.addons.chain.remove(lock)
    master.addons.chain.insert(0, lock)
    return addons


def attach(master) -> Runtime:
    """Install the gateway on a master once; later script (re)loads just lift the lockdown."""
    guard = master.addons.get(Guard.name)
    if guard is not None:
        guard.runtime.lockdown = None
        logger.info("tracegate: script reloaded; gateway addons already installed")
        return guard.runtime
    runtime = Runtime()
    addons = install(master, runtime)
    # Options set before these addons existed (e.g. --set tracegate_config) reach them now.
    updated = set(master.options.keys())
    try:
        for addon in addons:
            master.addons.invoke_addon_sync(addon, hooks.ConfigureHook(updated))
    except exceptions.OptionsError as exc:
        # mitmproxy exits on errors logged during start-up; should this be later, the
        # lockdown keeps every request refused.
        runtime.lockdown = f"start-up refused: {exc}"
        logger.error("%s", exc)
        return runtime
    scriptloader = master.addons.get("scriptloader")
    if scriptloader is not None and getattr(scriptloader, "is_running", False):
        for addon in addons:
            if not hasattr(addon, "running"):
                continue
            result = addon.running()
            if result is not None:  # async running hooks: schedule, do not block the load
                asyncio.get_running_loop().create_task(result)
    return runtime


def detach(master) -> None:
    guard = master.addons.get(Guard.name)
    if guard is not None:
        guard.runtime.lockdown = SCRIPT_UNLOADED
        if not master.should_exit.is_set():
            logger.error("tracegate: %s", SCRIPT_UNLOADED)
