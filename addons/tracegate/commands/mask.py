"""`tracegate mask`: the gateway's masking engine on files, to try rules before deploying."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tracegate.commands import EXIT_USAGE, fail
from tracegate.config import ConfigError, load_config


def cmd_mask(args: argparse.Namespace) -> int:
    """Mask files with the gateway's engine, to try rules before deploying them."""
    import os

    from tracegate.config import ScopeConfig
    from tracegate.masking import BodyError, Masker, MaskReport

    if args.detectors:
        if args.config or args.role:
            return fail("use either --detectors or --config/--role", EXIT_USAGE)
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
            return fail("give --config and --role, or --detectors all", EXIT_USAGE)
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            return fail(str(exc))
        role = config.roles.get(args.role)
        if role is None:
            return fail(f"{args.config}: no role {args.role!r} (roles: {', '.join(config.roles)})")
        purpose = args.purpose or role.default_purpose
        if purpose not in role.scopes:
            return fail(f"role {args.role!r} has no purpose {purpose!r}")
        scope = role.scopes[purpose]
        hash_key = os.environ.get(config.masking.hash_key_env, "").encode() or None
    try:
        masker = Masker(scope, hash_key or b"tracegate-mask-cli")
    except ValueError as exc:
        return fail(str(exc))
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
            return fail(f"{path}: cannot read: {exc.strerror}", EXIT_USAGE)
        report = MaskReport()
        try:
            masked = masker.mask_body(body, kind, report, indent=2 if kind == "json" else None)
        except BodyError as exc:
            return fail(f"{path}: {exc}", EXIT_USAGE)
        del body
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
