"""`tracegate run`: the gateway in a mitmproxy master with its addons registered directly."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from tracegate.commands import fail
from tracegate.config import ConfigError, load_config


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc))
    # Build the gateway once before the proxy starts, so missing secrets fail here, in one line.
    from tracegate.gateway import Gateway

    try:
        Gateway.from_config(config)
    except ConfigError as exc:
        return fail(f"{args.config}: {exc}")
    host = args.listen_host or config.listen.host
    port = config.listen.port if args.listen_port is None else args.listen_port
    serve = _serve(Path(args.config), config, host, port, args.web, args.web_port, args.instance_id)
    return asyncio.run(serve)


async def _serve(
    path: Path, config, host: str, port: int, web: bool, web_port: int, instance: str | None
) -> int:
    from mitmproxy import exceptions, options

    from tracegate.proxy import install
    from tracegate.proxy.runtime import Runtime

    # As mitmproxy's own entry points do: addons log at INFO, noisy libraries less.
    logging.getLogger().setLevel(logging.DEBUG)
    for name, level in (("tornado", logging.WARNING), ("asyncio", logging.WARNING)):
        logging.getLogger(name).setLevel(level)
    for name in ("hpack", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    opts = options.Options()
    if web:
        from mitmproxy.tools.web.master import WebMaster

        master = WebMaster(opts, with_termlog=True)
    else:
        from mitmproxy.tools.dump import DumpMaster

        master = DumpMaster(opts, with_termlog=True, with_dumper=False)
    runtime = Runtime()
    install(master, runtime)
    settings = {
        "mode": [f"reverse:{config.upstream.endpoint}"],
        "listen_host": host,
        "listen_port": port,
        "tracegate_config": str(path),
    }
    if instance:
        settings["tracegate_instance"] = instance
    if config.listen.certificate:
        settings["certs"] = [f"*={config.listen.certificate}"]
    if web:
        settings.update(web_port=web_port, web_open_browser=False)
    try:
        opts.update(**settings)
    except exceptions.OptionsError as exc:
        return fail(str(exc).removeprefix("tracegate: "))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    loop.add_signal_handler(signal.SIGHUP, runtime.reload, "SIGHUP")
    await master.run()
    return 0
