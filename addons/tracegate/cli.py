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
    runtime = Runtime()
    install(master, runtime)
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
    loop.add_signal_handler(signal.SIGHUP, runtime.reload, "SIGHUP")
    await master.run()
    return 0


def cmd_mask(args: argparse.Namespace) -> int:
    """Mask files with the gateway's engine, to try rules before deploying them."""
    import json
    import os

    from tracegate.config import ScopeConfig
    from tracegate.masking import BodyError, Masker, MaskReport

    if args.detectors:
        if args.config or args.role:
            return _fail("use either --detectors or --config/--role", EXIT_USAGE)
        scope = ScopeConfig(
            operations=["GetObject"],
            prefixes=[""],
            detectors={
                "run": ["secrets", "pii"] if args.detectors == "all" else args.detectors.split(",")
            },
        )
        hash_key = None
    else:
        if not (args.config and args.role):
            return _fail("give --config and --role, or --detectors all", EXIT_USAGE)
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            return _fail(str(exc))
        role = config.roles.get(args.role)
        if role is None:
            return _fail(f"{args.config}: no role {args.role!r} (roles: {', '.join(config.roles)})")
        purpose = args.purpose or role.default_purpose
        if purpose not in role.scopes:
            return _fail(f"role {args.role!r} has no purpose {purpose!r}")
        scope = role.scopes[purpose]
        hash_key = os.environ.get(config.masking.hash_key_env, "").encode() or None
    try:
        masker = Masker(scope, hash_key or b"tracegate-mask-cli")
    except ValueError as exc:
        return _fail(str(exc))
    out_dir = Path(args.output) if args.output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    total = MaskReport()
    for name in args.files:
        path = Path(name)
        kind = "jsonl" if path.suffix in (".jsonl", ".ndjson") else "json"
        try:
            body = path.read_bytes()
        except OSError as exc:
            return _fail(f"{path}: cannot read: {exc.strerror}", EXIT_USAGE)
        report = MaskReport()
        try:
            masked = masker.mask_body(body, kind, report)
        except BodyError as exc:
            return _fail(f"{path}: {exc}", EXIT_USAGE)
        if kind == "json":
            masked = json.dumps(json.loads(masked), ensure_ascii=False, indent=2).encode() + b"\n"
        if out_dir:
            (out_dir / path.name).write_bytes(masked)
        else:
            sys.stdout.buffer.write(masked)
        for rule, count in report.counts.items():
            total.counts[rule] += count
            total.actions[rule] = report.actions[rule]
        total.documents += report.documents
    if args.report:
        print(f"{total.documents} document(s) masked", file=sys.stderr)
        for rule, count in sorted(total.counts.items()):
            print(f"  {rule:<32} {total.actions[rule]:<8} {count}", file=sys.stderr)
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

    mask = sub.add_parser("mask", help="mask JSON/JSONL files with the gateway's engine")
    mask.add_argument("files", nargs="+", metavar="FILE", help=".json or .jsonl files")
    mask.add_argument("--config", help="the YAML config whose rules to apply")
    mask.add_argument("--role", help="the role whose scope to apply (with --config)")
    mask.add_argument("--purpose", help="the purpose (default: the role's default)")
    mask.add_argument(
        "--detectors", help="no config: run detectors ('all', or names/groups, comma-separated)"
    )
    mask.add_argument("-o", "--output", help="write one masked file per input into this folder")
    mask.add_argument("--report", action="store_true", help="print counts per type to stderr")
    mask.set_defaults(func=cmd_mask)

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
