"""`tracegate audit ...`: keys, verification, reading, export and replay of the audit trail."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tracegate.commands import EXIT_USAGE, fail
from tracegate.config import ConfigError, load_config


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
            return fail(f"{path}: already exists; refusing to overwrite a signing key")
        public = SigningKey.generate(path)
        print(f"private key: {path} (keep it outside the audit database's host if you can)")
        print(f"public key:  {public} (give this to auditors: tracegate audit verify --public-key)")
        return 0
    database = Path(args.database)
    if not database.exists():
        return fail(f"{database}: no such audit database")
    if args.audit_command == "verify":
        try:
            key = load_public_key(args.public_key) if args.public_key else None
        except (OSError, ValueError) as exc:
            return fail(f"{args.public_key}: {exc}")
        result = verify(database, key)
        for problem in result.problems:
            print(f"{database}: {problem}", file=sys.stderr)
        signed = "signatures checked" if key else "signatures NOT checked (no --public-key)"
        state = "ok" if result.ok else f"FAILED ({len(result.problems)} problem(s))"
        print(
            f"{database}: {result.rows} rows, {result.approval_events} approval events, "
            f"{result.checkpoints} checkpoints, {signed}: {state}"
        )
        return 0 if result.ok else 1
    if args.audit_command == "prune":
        from tracegate.audit.chain import prune

        try:
            key = SigningKey.load(args.key)
        except (OSError, ValueError) as exc:
            return fail(f"{args.key}: {exc}")
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
                return fail(f"no flow {args.flow_id!r} in {database}")
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
    return fail("unknown audit command", EXIT_USAGE)


def _replay(reader, args: argparse.Namespace) -> int:
    """Show what the requester saw; optionally re-run it against the store."""
    import asyncio as aio
    import difflib

    from pydantic import ValidationError

    from tracegate.audit.bodies import body_digest, decompress
    from tracegate.audit.replay import against_store
    from tracegate.config import GatewayConfig

    row = reader.flow(args.flow_id)
    if row is None:
        return fail(f"no flow {args.flow_id!r} in {args.database}")
    body = reader.body(args.flow_id)
    if body is not None and body_digest(body) != row.get("body_sha256"):
        return fail(
            f"flow {args.flow_id}: the kept body does not match the digest in its audit row "
            "(edited or swapped); run `tracegate audit verify`"
        )
    seen = decompress(body["response_body"]) if body else None
    if not (args.against_store or args.policy):
        if seen is None:
            return fail(f"flow {args.flow_id}: no body kept (role {row['role']}: bodies none)")
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
                return fail(f"policy version {row['policy_version']} is not stored")
            config = GatewayConfig.model_validate_json(stored["config"])
        result = aio.run(against_store(row, body, config))
    except (ConfigError, ValidationError, ValueError) as exc:
        return fail(str(exc).splitlines()[0])
    except Exception as exc:
        return fail(f"replay failed: {type(exc).__name__}: {exc}")
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
