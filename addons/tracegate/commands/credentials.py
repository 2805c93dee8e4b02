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
from xml.etree import ElementTree

import httpx

from tracegate.commands import fail
from tracegate.sts import ACTION, STS_NS, VERSION

NS = {"sts": STS_NS}


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
        root = ElementTree.fromstring(answer.content)
    except ElementTree.ParseError:
        return fail(f"{args.endpoint} answered {answer.status_code} without STS XML")
    if answer.status_code != 200:
        code = root.findtext(".//sts:Error/sts:Code", default="?", namespaces=NS)
        message = root.findtext(".//sts:Error/sts:Message", default="", namespaces=NS)
        return fail(f"STS refused: {code}: {message}")
    credentials = root.find(".//sts:Credentials", NS)
    if credentials is None:
        return fail("the STS answer holds no Credentials")

    def field(name: str) -> str:
        return credentials.findtext(f"sts:{name}", default="", namespaces=NS)

    print(
        json.dumps(
            {
                "Version": 1,
                "AccessKeyId": field("AccessKeyId"),
                "SecretAccessKey": field("SecretAccessKey"),
                "SessionToken": field("SessionToken"),
                "Expiration": field("Expiration"),
            }
        )
    )
    return 0
