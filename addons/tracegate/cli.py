"""`tracegate run | check`: the recommended way to run the gateway, and an offline config check.

Problems are reported as one line on stderr with a non-zero exit, never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def _filters(args: argparse.Namespace):
    from tracegate.audit.reader import Filters

    return Filters(
        subject=args.subject,
        role=args.role,
        purpose=args.purpose,
        resource_prefix=args.resource,
        decision=args.decision,
        since=args.since,
        until=args.until,
        session=getattr(args, "session", None),
    )


def cmd_audit(args: argparse.Namespace) -> int:
    from tracegate.audit.chain import SigningKey, load_public_key, verify
    from tracegate.audit.reader import AuditReader, export

    if args.audit_command == "keygen":
        path = Path(args.path)
        if path.exists():
            return _fail(f"{path}: already exists; refusing to overwrite a signing key")
        public = SigningKey.generate(path)
        print(f"private key: {path} (keep it outside the audit database's host if you can)")
        print(f"public key:  {public} (give this to auditors: tracegate audit verify --public-key)")
        return 0
    database = Path(args.database)
    if not database.exists():
        return _fail(f"{database}: no such audit database")
    if args.audit_command == "verify":
        try:
            key = load_public_key(args.public_key) if args.public_key else None
        except (OSError, ValueError) as exc:
            return _fail(f"{args.public_key}: {exc}")
        result = verify(database, key)
        for problem in result.problems:
            print(f"{database}: {problem}", file=sys.stderr)
        signed = "signatures checked" if key else "signatures NOT checked (no --public-key)"
        state = "ok" if result.ok else f"FAILED ({len(result.problems)} problem(s))"
        print(
            f"{database}: {result.rows} rows, {result.checkpoints} checkpoints, {signed}: {state}"
        )
        return 0 if result.ok else 1
    if args.audit_command == "prune":
        from tracegate.audit.chain import prune

        try:
            key = SigningKey.load(args.key)
        except (OSError, ValueError) as exc:
            return _fail(f"{args.key}: {exc}")
        deleted, anchor = prune(database, args.before, key)
        if anchor is None:
            print(f"{database}: no rows before {args.before}")
        else:
            print(
                f"{database}: removed {deleted} rows before {args.before}; "
                f"signed anchor at row {anchor}"
            )
        return 0
    reader = AuditReader(database)
    try:
        if args.audit_command == "sessions":
            sessions = reader.sessions(_filters(args))
            if args.json:
                print(json.dumps(sessions, indent=2))
            for s in [] if args.json else sessions:
                print(
                    f"{s['first']} .. {s['last']}  {s['session_id'][:8]}  {s['subject'] or '-'}"
                    f"  {s['role'] or '-'}  {s['flows']} flows, {s['denied']} denied"
                )
            return 0
        if args.audit_command == "replay":
            return _replay(reader, args)
        if args.audit_command == "show":
            row = reader.flow(args.flow_id)
            if row is None:
                return _fail(f"no flow {args.flow_id!r} in {database}")
            print(json.dumps(row, indent=2) if args.json else _describe(row))
            return 0
        if args.audit_command == "search":
            rows = list(reader.flows(_filters(args), limit=args.limit))
            if args.json:
                print(json.dumps(rows, indent=2))
            for row in [] if args.json else rows:
                print(
                    f"{row['ts']}  {row['decision']:<5} {row['status']}  {row['subject'] or '-'}"
                    f"  {row['role'] or '-'}/{row['purpose'] or '-'}  {row['operation'] or '-'}"
                    f"  {row['resource'] or row['path']}  {row['reason']}"
                )
            return 0
        if args.audit_command == "export":
            rows = reader.flows(_filters(args))
            if args.format in ("mitm", "har"):
                from tracegate.audit.flows import to_flow, write_har, write_mitm

                flows = (to_flow(row, reader.body(row["flow_id"])) for row in rows)
                write = write_mitm if args.format == "mitm" else write_har
                count = write(flows, args.output)
                print(f"{args.output}: {count} flows", file=sys.stderr)
                return 0
            with open(args.output, "w", newline="") as out:
                for chunk in export(rows, args.format):
                    out.write(chunk)
            return 0
    finally:
        reader.close()
    return _fail("unknown audit command", EXIT_USAGE)


def _replay(reader, args: argparse.Namespace) -> int:
    """Show what the requester saw; optionally re-run it against the store."""
    import asyncio as aio
    import difflib

    from pydantic import ValidationError

    from tracegate.audit.bodies import decompress
    from tracegate.audit.replay import against_store
    from tracegate.config import GatewayConfig

    row = reader.flow(args.flow_id)
    if row is None:
        return _fail(f"no flow {args.flow_id!r} in {args.database}")
    body = reader.body(args.flow_id)
    seen = decompress(body["response_body"]) if body else None
    if not (args.against_store or args.policy):
        if seen is None:
            return _fail(f"flow {args.flow_id}: no body kept (role {row['role']}: bodies none)")
        print(
            f"# {row['ts']} {row['subject']} as {row['role']}/{row['purpose']}: "
            f"{row['method']} {row['path']} -> {row['status']} ({row['decision']})"
        )
        sys.stdout.write(seen.decode(errors="replace") + "\n")
        return 0
    try:
        if args.policy:
            config = load_config(args.policy)
        else:
            stored = reader.policy(row["policy_version"])
            if stored is None:
                return _fail(f"policy version {row['policy_version']} is not stored")
            config = GatewayConfig.model_validate_json(stored["config"])
        result = aio.run(against_store(row, body, config))
    except (ConfigError, ValidationError, ValueError) as exc:
        return _fail(str(exc).splitlines()[0])
    except Exception as exc:
        return _fail(f"replay failed: {type(exc).__name__}: {exc}")
    if args.policy:
        before = _pretty(seen or b"")
        after = _pretty(result.body)
        diff = difflib.unified_diff(
            before,
            after,
            f"served under {row['policy_version']}",
            f"under {args.policy}",
            lineterm="",
        )
        print("\n".join(diff) or "no difference")
        return 0
    print(f"store content unchanged: {'yes' if result.store_unchanged else 'NO'}")
    print(f"served bytes reproduced: {'yes' if result.reproduced else 'NO'}")
    return 0 if result.store_unchanged and result.reproduced else 1


def _pretty(data: bytes) -> list[str]:
    try:
        return json.dumps(json.loads(data), indent=2, sort_keys=True).splitlines()
    except ValueError:
        return data.decode(errors="replace").splitlines()


def _describe(row: dict) -> str:
    lines = [f"{k:>16}: {v}" for k, v in row.items() if k not in ("masks", "roles")]
    masks = json.loads(row.get("masks") or "{}")
    for rule, info in masks.get("rules", {}).items():
        lines.append(f"{'mask':>16}: {rule} {info['action']} x{info['count']}")
    return "\n".join(lines)


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

    audit = sub.add_parser("audit", help="read, verify and export the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    keygen = audit_sub.add_parser("keygen", help="create an Ed25519 checkpoint signing key")
    keygen.add_argument("path", help="where to write the private key (PATH.pub: public key)")
    verify = audit_sub.add_parser("verify", help="check the hash chain and signed checkpoints")
    verify.add_argument("database")
    verify.add_argument("--public-key", help="the checkpoint public key (PEM)")
    for name, text in (
        ("sessions", "list sessions (one client connection each)"),
        ("search", "list flows matching filters"),
        ("export", "export flows as JSONL or CSV"),
    ):
        command = audit_sub.add_parser(name, help=text)
        command.add_argument("database")
        for flag in ("subject", "role", "purpose", "decision", "since", "until"):
            command.add_argument(f"--{flag}")
        command.add_argument("--resource", help="resource prefix, e.g. s3://traces/traces/a/")
        if name == "search":
            command.add_argument("--session")
            command.add_argument("--limit", type=int, default=None)
        if name == "export":
            command.add_argument("--format", choices=["jsonl", "csv", "mitm", "har"], required=True)
            command.add_argument("-o", "--output", required=True)
        else:
            command.add_argument("--json", action="store_true")
    prune_cmd = audit_sub.add_parser("prune", help="remove old rows, leaving a signed anchor")
    prune_cmd.add_argument("database")
    prune_cmd.add_argument("--before", required=True, help="ISO date/time, e.g. 2026-06-01")
    prune_cmd.add_argument("--key", required=True, help="the checkpoint signing key (PEM)")
    replay = audit_sub.add_parser(
        "replay", help="what a requester saw; re-run it (--against-store)"
    )
    replay.add_argument("database")
    replay.add_argument("flow_id")
    replay.add_argument(
        "--against-store",
        action="store_true",
        help="re-run against the store under the recorded policy and compare digests",
    )
    replay.add_argument("--policy", help="show how the result differs under another config")
    show = audit_sub.add_parser("show", help="one flow, by its flow id")
    show.add_argument("database")
    show.add_argument("flow_id")
    show.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)

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
