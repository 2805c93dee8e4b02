"""`tracegate approvals list|show|approve|deny`: the approval endpoint from a terminal.

The caller's own OIDC token comes from `--token` or `TRACEGATE_TOKEN`; the endpoint decides what
they may see and do. Exit 0 on success, 1 when the gateway refuses or cannot be reached, 2 on
bad usage; always one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import httpx

DEFAULT_URL = "http://127.0.0.1:8090"


def add_parser(sub: argparse._SubParsersAction) -> None:
    approvals = sub.add_parser("approvals", help="list and decide pending approvals")
    verbs = approvals.add_subparsers(dest="approvals_command", required=True)
    for verb, text in (
        ("list", "approvals you may decide (and your own requests)"),
        ("show", "one approval and its events"),
        ("approve", "approve a pending request"),
        ("deny", "deny a pending request"),
    ):
        command = verbs.add_parser(verb, help=text)
        if verb != "list":
            command.add_argument("approval_id")
        command.add_argument(
            "--url",
            default=os.environ.get("TRACEGATE_ADMIN_URL", DEFAULT_URL),
            help=f"the admin listener (default $TRACEGATE_ADMIN_URL or {DEFAULT_URL})",
        )
        command.add_argument("--token", help="your OIDC token (default $TRACEGATE_TOKEN)")
        if verb == "list":
            command.add_argument(
                "--status",
                default="pending",
                choices=["pending", "approved", "denied", "expired", "cancelled", "all"],
            )
        if verb in ("approve", "deny"):
            command.add_argument("--comment", default="", help="recorded with the decision")
        if verb in ("list", "show"):
            command.add_argument("--json", action="store_true")
    approvals.set_defaults(func=cmd_approvals)


def cmd_approvals(args: argparse.Namespace) -> int:
    token = args.token or os.environ.get("TRACEGATE_TOKEN")
    if not token:
        print(
            "tracegate approvals: give your token with --token or TRACEGATE_TOKEN", file=sys.stderr
        )
        return 2
    verb = args.approvals_command
    base = args.url.rstrip("/")
    if verb == "list":
        method, path, params, body = "GET", "/approvals", {"status": args.status}, None
    elif verb == "show":
        method, path, params, body = "GET", f"/approvals/{args.approval_id}", None, None
    else:
        path = f"/approvals/{args.approval_id}/{verb}"
        method, params, body = "POST", None, {"comment": args.comment}
    try:
        response = httpx.request(
            method,
            base + path,
            params=params,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=20,
        )
        data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"tracegate approvals: cannot reach {base}: {exc}", file=sys.stderr)
        return 1
    if response.status_code >= 300:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        code, reason = error.get("code", response.status_code), error.get("reason", response.text)
        print(f"tracegate approvals: {code}: {reason}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    elif verb == "list":
        for approval in data["approvals"]:
            print(_line(approval))
        if not data["approvals"]:
            print(f"no {args.status} approvals")
    elif verb == "show":
        print(_line(data["approval"]))
        for event in data["events"]:
            print(f"  {event['ts']}  {event['event']:<12} {event['actor']} {event['how']}")
    else:
        approval = data["approval"]
        status = approval["status"]
        if status == "pending":
            status += f" ({len(approval['votes'])}/{approval['required']} approvals)"
        print(f"{approval['id']}: {status}")
    return 0


def _line(approval: dict) -> str:
    request = approval["request"]
    age = int(time.time() - approval["created_at"])
    return (
        f"{approval['id']}  {approval['status']:<9} {approval['requester']['subject']} "
        f"{approval['role']}/{approval['purpose']} {request['operation']} {request['resource']} "
        f"rule={approval['rule_id']} votes={len(approval['votes'])}/{approval['required']} "
        f"age={age}s reason={approval['reason']!r}"
    )
