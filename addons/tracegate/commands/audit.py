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
    import sqlite3

    try:
        return _audit(args)
    except sqlite3.DatabaseError as exc:
        return fail(f"{getattr(args, 'database', '')}: not a readable audit database ({exc})")
    except (_SharedLogError, ConfigError) as exc:
        return fail(str(exc))


class _SharedLogError(RuntimeError):
    """The shared database could not be read (named without its password)."""


def _dsn(value: str) -> str:
    """`--dsn`: `env:NAME` or `file:PATH` keep the password out of the process list."""
    from tracegate.configbase import read_secret

    if value.startswith("env:"):
        return read_secret("--dsn", env=value[4:])
    if value.startswith("file:"):
        return read_secret("--dsn", file=value[5:])
    return value


def _open_shared(value: str):
    """The shared database's log, through the surface the audit code reads (state.portable)."""
    import psycopg

    from tracegate.state.database import describe
    from tracegate.state.portable import PortableConnection

    dsn = _dsn(value)
    where = f"postgres {describe(dsn)}"
    try:
        return where, PortableConnection.connect(dsn)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _SharedLogError(f"{where}: {first}") from None


def _audit(args: argparse.Namespace) -> int:
    if args.audit_command == "keygen":
        return _keygen(args)
    if args.audit_command == "check-proof":
        return _check_proof(args)
    if getattr(args, "dsn", None):
        if args.database:
            return fail("give the audit database or --dsn, not both", EXIT_USAGE)
        label, source = _open_shared(args.dsn)
        try:
            return _read(args, label, source)
        except Exception as exc:
            import psycopg

            if not isinstance(exc, psycopg.Error):
                raise
            raise _SharedLogError(f"{label}: {str(exc).strip().splitlines()[0]}") from None
        finally:
            source.close()
    if not args.database:
        return fail("give the audit database (a file) or --dsn for the shared one", EXIT_USAGE)
    database = Path(args.database)
    if not database.exists():
        return fail(f"{database}: no such audit database")
    if args.audit_command == "verify":
        import sqlite3

        from tracegate.audit.log import in_chain_format

        conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        try:
            chain_format = in_chain_format(conn)
        finally:
            conn.close()
        if chain_format:
            return fail(
                f"{database}: written in the hash-chain format; verify it with the release that "
                f"wrote it, or run `tracegate audit migrate {database}` (it checks that chain)"
            )
    if args.audit_command == "migrate":
        from tracegate.audit.migrate import MigrationRefused, migrate

        try:
            flows, events = migrate(database)
        except MigrationRefused as exc:
            return fail(
                f"{database}: {exc}" if not str(exc).startswith(str(database)) else str(exc)
            )
        print(
            f"{database}: the old hash chain holds; {flows} rows and {events} approval events "
            "are now the first entries of the Merkle log (sign a checkpoint: `tracegate audit "
            "checkpoint`)"
        )
        return 0
    return _read(args, str(database), database)


def _read(args: argparse.Namespace, database: str, source) -> int:
    """The commands that read (or sign, or prune) a log: a file's path or the shared log."""
    from tracegate.audit.reader import AuditReader, export

    if args.audit_command == "verify":
        return _verify(database, source, args)
    if args.audit_command == "prove":
        return _prove(source, args)
    if args.audit_command in ("prune", "checkpoint"):
        return _sign_or_prune(database, source, args)
    reader = AuditReader(source)
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
            return _replay(reader, database, args)
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


def _keygen(args: argparse.Namespace) -> int:
    from tracegate.audit.keys import SigningKey
    from tracegate.audit.note import NoteError, check_key_name

    path = Path(args.path)
    if path.exists():
        return fail(f"{path}: already exists; refusing to overwrite a signing key")
    try:
        check_key_name(args.origin)
    except NoteError as exc:
        return fail(f"--origin: {exc}")
    public = SigningKey.generate(path, args.origin)
    vkey = path.with_name(path.name + ".vkey")
    print(f"private key:  {path} (keep it outside the audit database's host if you can)")
    print(f"public key:   {public} (PEM)")
    print(f"verifier key: {vkey.read_text().strip()} ({vkey}; give this to auditors)")
    return 0


def _log_key(args: argparse.Namespace, origin: str | None):
    from tracegate.audit.keys import log_verifier

    return log_verifier(args.public_key, getattr(args, "origin", None) or origin)


def _verify(database: str, source, args: argparse.Namespace) -> int:
    from tracegate.audit.integrity import verify
    from tracegate.audit.note import NoteError

    try:
        key = _log_key(args, _origin_of(source)) if args.public_key else None
        witnessed = _witnessed(args.witness, source) if args.witness else None
    except (OSError, ValueError, NoteError) as exc:
        return fail(str(exc).splitlines()[0])
    result = verify(source, key, witnessed)
    for problem in result.problems:
        print(f"{database}: {problem}", file=sys.stderr)
    signed = (
        f"signatures checked ({key.name})" if key else "signatures NOT checked (no --public-key)"
    )
    state = "ok" if result.ok else f"FAILED ({len(result.problems)} problem(s))"
    witness = f", witness: {result.witnessed}" if result.witnessed else ""
    pending = f", {result.pending} rows not yet integrated" if result.pending else ""
    print(
        f"{database}: {result.entries} log entries ({result.rows} rows, "
        f"{result.approval_events} approval events), {result.checkpoints} checkpoints, "
        f"{signed}{witness}{pending}: {state}"
    )
    return 0 if result.ok else 1


def _origin_of(database) -> str | None:
    """The origin the log's latest checkpoint names (for a PEM key given without --origin)."""
    import sqlite3

    from tracegate.audit.tlog import MerkleLog

    conn = (
        sqlite3.connect(f"file:{database}?mode=ro", uri=True)
        if isinstance(database, Path)
        else database
    )
    try:
        latest = MerkleLog(conn).latest()
    except sqlite3.Error:  # a file with no log yet
        return None
    finally:
        if conn is not database:
            conn.close()
    return latest.note.split("\n", 1)[0] if latest else None


def _witnessed(source: str, database) -> str:
    """The latest checkpoint a witness holds for this log: from its URL, state file, or a
    directory sink's checkpoints file."""
    from tracegate.audit.integrity import checkpoints_in

    origin = _origin_of(database) or ""
    if source.startswith(("http://", "https://")):
        import httpx

        answer = httpx.get(source.rstrip("/") + "/latest", params={"origin": origin}, timeout=10)
        if answer.status_code != 200:
            raise ValueError(f"{source}: {answer.status_code} {answer.text.strip()}")
        return answer.text
    text = Path(source).read_text()
    if text.lstrip().startswith("{"):
        record = json.loads(text).get(origin)
        if record is None:
            raise ValueError(f"{source}: the witness holds nothing for {origin!r}")
        return str(record["note"])
    notes = [n for n in checkpoints_in(text) if n.startswith(origin + "\n")]
    if not notes:
        raise ValueError(f"{source}: no checkpoint of {origin!r}")
    return max(notes, key=lambda n: int(n.split("\n")[1]))


def _prove(source, args: argparse.Namespace) -> int:
    from tracegate.audit.integrity import ProofUnavailable, prove

    try:
        proof = prove(source, args.flow_id)
    except ProofUnavailable as exc:
        return fail(str(exc))
    output = Path(args.output)
    entry = output.with_name(output.name + ".entry")
    output.write_text(proof.proof)
    entry.write_bytes(proof.entry)
    print(f"{output}: entry {proof.index} (flow {args.flow_id}); its entry: {entry}")
    print(f"check it: tracegate audit check-proof {output} --entry {entry} --public-key KEY.vkey")
    return 0


def _check_proof(args: argparse.Namespace) -> int:
    from tracegate.audit import merkle
    from tracegate.audit.integrity import check_proof
    from tracegate.audit.note import NoteError, Verifier

    try:
        text = Path(args.proof).read_text()
        entry = Path(args.entry).read_bytes()
        key = _log_key(args, text.partition("\n\n")[2].split("\n", 1)[0] or None)
        witnesses = tuple(
            Verifier.parse(Path(w).read_text() if Path(w).is_file() else w)
            for w in args.witness_key
        )
        result = check_proof(text, entry, key, witnesses)
    except (OSError, ValueError, NoteError, merkle.ProofError) as exc:
        return fail(f"{args.proof}: {str(exc).splitlines()[0]}")
    missing = [w.name for w in witnesses if w.name not in result.cosigned_by]
    if missing:
        return fail(f"{args.proof}: not cosigned by {', '.join(missing)}")
    cosigned = f", cosigned by {', '.join(result.cosigned_by)}" if result.cosigned_by else ""
    print(
        f"{args.proof}: ok: entry {result.index} is in {result.checkpoint.origin} "
        f"(checkpoint of {result.checkpoint.size} entries, signed by {key.name}{cosigned})"
    )
    return 0


def _sign_or_prune(database: str, source, args: argparse.Namespace) -> int:
    import sqlite3

    from tracegate.audit.integrity import prune
    from tracegate.audit.keys import SigningKey
    from tracegate.audit.tlog import LogForked, MerkleLog, immediate

    try:
        signer = SigningKey.load(args.key).signer(args.origin) if args.key else None
    except (OSError, ValueError) as exc:
        return fail(f"{args.key}: {exc}")
    if args.audit_command == "prune":
        deleted, through = prune(source, args.before, signer)
        if through < 0:
            print(f"{database}: no rows before {args.before}")
        else:
            print(
                f"{database}: removed {deleted} rows before {args.before} (entries up to "
                f"{through}); their leaves stay, so every checkpoint and proof still holds"
            )
        return 0
    assert signer is not None
    if isinstance(source, Path):
        conn = sqlite3.connect(source, timeout=10, isolation_level=None)
        MerkleLog.create(conn)
    else:
        conn = source
    try:
        with immediate(conn):
            signed = MerkleLog(conn).sign(signer)
    except LogForked as exc:
        return fail(str(exc))
    finally:
        if conn is not source:
            conn.close()
    if signed is None:
        print(f"{database}: the latest checkpoint already covers the whole log")
    else:
        print(f"{database}: signed a checkpoint of {signed.size} entries")
    return 0


def _replay(reader, database: str, args: argparse.Namespace) -> int:
    """Show what the requester saw; optionally re-run it against the store."""
    import asyncio as aio
    import difflib

    from pydantic import ValidationError

    from tracegate.audit.bodies import body_digest, decompress
    from tracegate.audit.replay import against_store
    from tracegate.config import GatewayConfig

    row = reader.flow(args.flow_id)
    if row is None:
        return fail(f"no flow {args.flow_id!r} in {database}")
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
