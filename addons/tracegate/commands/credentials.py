"""`tracegate credentials`: an AWS `credential_process` for clients whose STS endpoint cannot be
pointed at the gateway (the Java SDK, Spark, rclone, DuckDB's `CHAIN 'process'`).

It reads the OIDC token from a file, calls the gateway's AssumeRoleWithWebIdentity and prints
the process-credentials JSON AWS SDKs read (`Version: 1`, keys, session token, expiration).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import httpx

from tracegate.commands import fail
from tracegate.sts import ACTION, VERSION, StsRefused, read_answer


def cmd_credentials(args: argparse.Namespace) -> int:
    token_file = args.token_file or os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE")
    role_arn = args.role_arn or os.environ.get("AWS_ROLE_ARN")
    if not token_file or not role_arn:
        return fail(
            "give --token-file and --role-arn (or AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)"
        )
    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        return fail(f"cannot read the token file {token_file}: {exc.strerror or exc}")
    form = {
        "Action": ACTION,
        "Version": VERSION,
        "RoleArn": role_arn,
        "RoleSessionName": args.session_name,
        "WebIdentityToken": token,
    }
    if args.duration:
        form["DurationSeconds"] = str(args.duration)
    verify: str | bool = args.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or True
    try:
        answer = httpx.post(args.endpoint.rstrip("/") + "/", data=form, verify=verify, timeout=30)
    except httpx.HTTPError as exc:
        return fail(f"cannot reach {args.endpoint}: {exc}")
    try:
        credentials = read_answer(answer.content)
    except StsRefused as refused:
        return fail(f"STS refused: {refused}")
    except ValueError as exc:
        return fail(f"{args.endpoint} answered {answer.status_code}: {exc}")
    print(json.dumps({"Version": 1, **credentials}))
    return 0
