"""tracegate's command line: run the gateway, check configs, mask files, read the audit,
decide approvals.

Each command lives in `tracegate.commands`; problems are reported as one line on stderr with a
non-zero exit, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tracegate.commands import approvals
from tracegate.commands.audit import cmd_audit
from tracegate.commands.check import cmd_check
from tracegate.commands.credentials import cmd_credentials
from tracegate.commands.mask import cmd_mask
from tracegate.commands.run import cmd_run
from tracegate.commands.witness import cmd_witness

ORIGIN = "tracegate.local/audit"
DATABASE_HELP = "a gateway's audit file (audit.backend sqlite)"
DSN_HELP = (
    "the shared log instead (audit.backend postgres): env:VAR or file:PATH holding the DSN "
    "(keeps its password out of the process list), or the DSN itself"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracegate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the gateway (mitmdump, or mitmweb with --web)")
    run.add_argument("--config", required=True, help="the YAML config")
    run.add_argument("--web", action="store_true", help="start mitmweb instead of mitmdump")
    run.add_argument("--web-port", type=int, default=8081, help="mitmweb's port (with --web)")
    run.add_argument("--listen-host", default=None, help="override listen.host")
    run.add_argument("--listen-port", type=int, default=None, help="override listen.port")
    run.add_argument(
        "--instance-id", help="this replica's name in the shared log (default: host-pid)"
    )
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

    creds = sub.add_parser(
        "credentials", help="AWS credential_process: STS credentials from the gateway"
    )
    creds.add_argument("--endpoint", required=True, help="the gateway's URL, e.g. https://gw:8080")
    creds.add_argument("--token-file", help="the OIDC token (default AWS_WEB_IDENTITY_TOKEN_FILE)")
    creds.add_argument("--role-arn", help="the role (default AWS_ROLE_ARN)")
    creds.add_argument("--session-name", default="tracegate", help="a purpose of the role")
    creds.add_argument("--duration", type=int, help="seconds (at most the gateway's maximum)")
    creds.add_argument("--ca-bundle", help="the CA that signed the gateway's certificate")
    creds.set_defaults(func=cmd_credentials)

    audit = sub.add_parser("audit", help="read, verify and export the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    keygen = audit_sub.add_parser("keygen", help="create an Ed25519 checkpoint signing key")
    keygen.add_argument("path", help="the private key (PATH.pub: PEM public key, PATH.vkey)")
    keygen.add_argument("--origin", default=ORIGIN, help=f"the log's origin (default {ORIGIN})")
    key_help = "the log's verifier key (.vkey file or string) or PEM public key"
    verify = audit_sub.add_parser(
        "verify", help="check every entry, node and checkpoint of the Merkle log"
    )
    verify.add_argument("database", nargs="?", help=DATABASE_HELP)
    verify.add_argument("--dsn", help=DSN_HELP)
    verify.add_argument("--public-key", help=key_help)
    verify.add_argument("--origin", help="the log's origin (with a PEM key)")
    verify.add_argument(
        "--witness", help="a witness URL, its state file, or a directory sink's checkpoints file"
    )
    prove = audit_sub.add_parser("prove", help="write a tlog-proof that a flow is in the log")
    prove.add_argument("database", nargs="?", help=DATABASE_HELP)
    prove.add_argument("--dsn", help=DSN_HELP)
    prove.add_argument("flow_id")
    prove.add_argument("-o", "--output", required=True, help="the proof (FILE.entry: the entry)")
    check_proof = audit_sub.add_parser(
        "check-proof", help="verify a tlog-proof offline, without the database"
    )
    check_proof.add_argument("proof")
    check_proof.add_argument("--entry", required=True, help="the entry file `prove` wrote")
    check_proof.add_argument("--public-key", required=True, help=key_help)
    check_proof.add_argument("--origin", help="the log's origin (with a PEM key)")
    check_proof.add_argument(
        "--witness-key", action="append", default=[], help="a witness's verifier key (repeat)"
    )
    migrate = audit_sub.add_parser(
        "migrate", help="bring a hash-chain audit file into the Merkle log (checks it first)"
    )
    migrate.add_argument("database")  # a file: the chain format was never shared
    checkpoint = audit_sub.add_parser("checkpoint", help="sign a checkpoint of the log now")
    checkpoint.add_argument("database", nargs="?", help=DATABASE_HELP)
    checkpoint.add_argument("--dsn", help=DSN_HELP)
    checkpoint.add_argument("--key", required=True, help="the checkpoint signing key (PEM)")
    checkpoint.add_argument("--origin", default=ORIGIN, help="the log's origin")
    for name, text in (
        ("sessions", "list sessions (one client connection each)"),
        ("search", "list flows matching filters"),
        ("export", "export flows as JSONL or CSV"),
    ):
        command = audit_sub.add_parser(name, help=text)
        command.add_argument("database", nargs="?", help=DATABASE_HELP)
        command.add_argument("--dsn", help=DSN_HELP)
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
    prune_cmd = audit_sub.add_parser(
        "prune", help="drop old rows and bodies; their leaves (and every proof) stay"
    )
    prune_cmd.add_argument("database", nargs="?", help=DATABASE_HELP)
    prune_cmd.add_argument("--dsn", help=DSN_HELP)
    prune_cmd.add_argument("--before", required=True, help="ISO date/time, e.g. 2026-06-01")
    prune_cmd.add_argument("--key", help="sign a checkpoint after the prune (PEM)")
    prune_cmd.add_argument("--origin", default=ORIGIN, help="the log's origin (with --key)")
    replay = audit_sub.add_parser(
        "replay", help="what a requester saw; re-run it (--against-store)"
    )
    replay.add_argument("database", nargs="?", help=DATABASE_HELP)
    replay.add_argument("--dsn", help=DSN_HELP)
    replay.add_argument("flow_id")
    replay.add_argument(
        "--against-store",
        action="store_true",
        help="re-run against the store under the recorded policy and compare digests",
    )
    replay.add_argument("--policy", help="show how the result differs under another config")
    show = audit_sub.add_parser("show", help="one flow, by its flow id")
    show.add_argument("database", nargs="?", help=DATABASE_HELP)
    show.add_argument("--dsn", help=DSN_HELP)
    show.add_argument("flow_id")
    show.add_argument("--json", action="store_true")
    audit.set_defaults(func=cmd_audit)

    approvals.add_parser(sub)

    witness = sub.add_parser("witness", help="run a C2SP tlog-witness for tracegate logs")
    witness.add_argument("--state", required=True, help="JSON file of what it cosigned")
    witness.add_argument("--key", required=True, help="its Ed25519 key (PEM; created if absent)")
    witness.add_argument("--name", default="tracegate.local/witness", help="its key name")
    witness.add_argument(
        "--log-key", action="append", required=True, help="a log's verifier key (repeat)"
    )
    witness.add_argument("--host", default="127.0.0.1")
    witness.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    witness.set_defaults(func=cmd_witness)

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
