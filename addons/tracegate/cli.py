"""`tracegate run | check`: the recommended way to run the gateway, and an offline config check.

Problems are reported as one line on stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from tracegate.config import ConfigError, load_config

EXIT_USAGE = 2


def _fail(message: str, code: int = 1) -> int:
    print(f"tracegate: {message}", file=sys.stderr)
    return code


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    roles = ", ".join(config.roles)
    print(f"{args.config}: ok (policy version {config.version_hash()}; roles: {roles})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))
    # Build the gateway once before the proxy starts, so missing secrets fail here, in one line.
    from tracegate.gateway import Gateway

    try:
        Gateway.from_config(config)
    except ConfigError as exc:
        return _fail(f"{args.config}: {exc}")
    host = args.listen_host or config.listen.host
    port = config.listen.port if args.listen_port is None else args.listen_port
    return asyncio.run(_serve(Path(args.config), config, host, port, args.web, args.web_port))


async def _serve(path: Path, config, host: str, port: int, web: bool, web_port: int) -> int:
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
    install(master, Runtime())
    settings = {
        "mode": [f"reverse:{config.upstream.endpoint}"],
        "listen_host": host,
        "listen_port": port,
        "tracegate_config": str(path),
    }
    if config.listen.certificate:
        settings["certs"] = [f"*={config.listen.certificate}"]
    if web:
        settings.update(web_port=web_port, web_open_browser=False)
    try:
        opts.update(**settings)
    except exceptions.OptionsError as exc:
        return _fail(str(exc).removeprefix("tracegate: "))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracegate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway (mitmdump, or mitmweb with --web)")
    run.add_argument("--config", required=True, help="the YAML config")
    run.add_argument("--web", action="store_true", help="start mitmweb instead of mitmdump")
    run.add_argument("--web-port", type=int, default=8081, help="mitmweb's port (with --web)")
    run.add_argument("--listen-host", default=None, help="override listen.host")
    run.add_argument("--listen-port", type=int, default=None, help="override listen.port")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a config file offline")
    check.add_argument("config", help="the YAML config")
    check.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
