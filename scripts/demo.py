"""`make demo`: a local S3 with sample traces, a token issuer, and tracegate in front.

Starts everything on loopback, prints ready-to-paste commands with tokens for two roles, runs
those same commands once to check them, and stops everything on Ctrl-C.

    python scripts/demo.py            # mitmdump-style gateway
    python scripts/demo.py --web      # mitmweb UI as well
    python scripts/demo.py --check    # start, verify the printed commands, stop (used by tests)
    python scripts/demo.py --store dynamodb   # a local DynamoDB table instead of S3
    python scripts/demo.py --store langfuse   # a local Langfuse-shaped API (an `http` store)
    python scripts/demo.py --backend postgres # two gateways sharing a local PostgreSQL
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "addons"))

from tracegate.demo.issuer import TokenIssuer  # noqa: E402
from tracegate.demo.langfuse import LocalLangfuse  # noqa: E402
from tracegate.demo.postgres import LocalPostgres  # noqa: E402
from tracegate.demo.setup import (  # noqa: E402
    DYNAMODB_EXAMPLE,
    EXAMPLE,
    LANGFUSE_EXAMPLE,
    gateway_env,
    write_config,
)
from tracegate.demo.store import LocalDynamo, LocalS3, free_port  # noqa: E402
from tracegate.demo.tls import local_ca  # noqa: E402
from tracegate.demo.traces import dynamodb_items, sample_objects  # noqa: E402

RUN_DIR = REPO / "demo-run"
LISTENING = re.compile(r"listening at [\d.]+:(\d+)")


def port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def boto3_example(url: str, token: str) -> str:
    return f'''import boto3
from botocore.config import Config

TOKEN = "{token}"
s3 = boto3.client(
    "s3",
    endpoint_url="{url}",
    region_name="us-east-1",
    aws_access_key_id="not-needed",  # the gateway signs with its own credentials
    aws_secret_access_key="not-needed",
    config=Config(s3={{"addressing_style": "path"}}),
)
# boto3 signs the Authorization header itself, so the identity token rides in its own header.
s3.meta.events.register(
    "before-sign.s3", lambda request, **_: request.headers.__setitem__("X-Tracegate-Token", TOKEN)
)
print(s3.get_object(Bucket="traces", Key="traces/team-a/tr-a001.json")["Body"].read().decode())
for obj in s3.list_objects_v2(Bucket="traces", Prefix="traces/").get("Contents", []):
    print(obj["Key"])
'''


DYNAMODB_BOTO3 = '''"""boto3 against DynamoDB through tracegate (`make demo STORE=dynamodb`)."""
import boto3

TOKEN = "{token}"
db = boto3.client(
    "dynamodb",
    endpoint_url="{url}",
    region_name="us-east-1",
    aws_access_key_id="not-the-store-credentials",
    aws_secret_access_key="not-the-store-credentials",
)
# boto3 signs the Authorization header itself, so the identity token rides in its own header.
db.meta.events.register(
    "before-sign.dynamodb",
    lambda request, **_: request.headers.__setitem__("X-Tracegate-Token", TOKEN),
)
page = db.query(
    TableName="traces",
    KeyConditionExpression="tenant_id = :t",
    ExpressionAttributeValues={{":t": {{"S": "acme"}}}},
)
for item in page["Items"][:2]:
    print(item["trace_id"]["S"], item["messages"]["L"][1]["M"]["content"]["S"])
print("more pages:", "LastEvaluatedKey" in page)
'''


def dynamodb_commands(url: str) -> list[tuple[str, str, int]]:
    """(description, shell command, expected HTTP status) for the DynamoDB demo."""

    def call(token: str, operation: str, body: str) -> str:
        return (
            f'curl -s -H "X-Tracegate-Token: ${token}" '
            f'-H "X-Amz-Target: DynamoDB_20120810.{operation}" '
            f"-H 'Content-Type: application/x-amz-json-1.0' -d '{body}' {url}/"
        )

    def query(tenant: str) -> str:
        return (
            '{"TableName": "traces", "KeyConditionExpression": "tenant_id = :t", '
            f'"ExpressionAttributeValues": {{":t": {{"S": "{tenant}"}}}}}}'
        )

    return [
        (
            "support (tenant acme): query its tenant, masked",
            call("SUPPORT_TOKEN", "Query", query("acme")),
            200,
        ),
        (
            "analyst (tenant acme): the same items, metadata only",
            call("ANALYST_TOKEN", "Query", query("acme")),
            200,
        ),
        (
            "support: another tenant (refused, with the reason)",
            call("SUPPORT_TOKEN", "Query", query("globex")),
            403,
        ),
        (
            "support: a write (refused)",
            call("SUPPORT_TOKEN", "PutItem", '{"TableName": "traces"}'),
            403,
        ),
        (
            "no token (refused)",
            f"curl -s -H 'X-Amz-Target: DynamoDB_20120810.Query' -d '{query('acme')}' {url}/",
            401,
        ),
    ]


def langfuse_commands(url: str) -> list[tuple[str, str, int]]:
    """(description, shell command, expected HTTP status) for the Langfuse demo."""
    bearer = 'curl -s -H "Authorization: Bearer ${VAR}"'
    support, analyst = bearer.format(VAR="SUPPORT_TOKEN"), bearer.format(VAR="ANALYST_TOKEN")
    return [
        (
            "support (tenant acme): one trace with its observations, masked",
            f"{support} {url}/api/public/traces/lf-acme-001",
            200,
        ),
        (
            "support: a page of traces (other tenants' removed, limit capped)",
            f"{support} '{url}/api/public/traces?page=1&limit=50'",
            200,
        ),
        (
            "analyst: observations, cost and latency fields only",
            f"{analyst} '{url}/api/public/observations?limit=5'",
            200,
        ),
        (
            "support: a trace of another tenant (refused, with the reason)",
            f"{support} {url}/api/public/traces/lf-globex-001",
            403,
        ),
        (
            "support: an endpoint the route map does not list (refused)",
            f"{support} {url}/api/public/sessions",
            403,
        ),
        ("no token (refused)", f"curl -s {url}/api/public/traces", 401),
    ]


def commands(url: str) -> list[tuple[str, str, int]]:
    """(description, shell command, expected HTTP status) for each command the demo prints."""
    trace = f"{url}/traces/traces/team-a/tr-a001.json"
    bearer = 'curl -s -H "Authorization: Bearer ${VAR}"'
    return [
        (
            "support: read a trace (masked for this role)",
            f"{bearer.format(VAR='SUPPORT_TOKEN')} {trace}",
            200,
        ),
        (
            "analyst: the same trace, metadata only",
            f"{bearer.format(VAR='ANALYST_TOKEN')} {trace}",
            200,
        ),
        (
            "support: a trace of another team (refused, with the reason)",
            f"{bearer.format(VAR='SUPPORT_TOKEN')} {url}/traces/traces/team-b/tr-b001.json",
            403,
        ),
        (
            "support: list what the role may see",
            f"{bearer.format(VAR='SUPPORT_TOKEN')} '{url}/traces?list-type=2&prefix=traces/'",
            200,
        ),
        ("no token (refused)", f"curl -s {trace}", 401),
        (
            "support: raw conversations (purpose incident) need approval and a reason",
            f"{bearer.format(VAR='SUPPORT_TOKEN')} -H 'X-Tracegate-Purpose: incident' {trace}",
            403,
        ),
    ]


def approval_walkthrough(url: str, admin: str) -> list[str]:
    """The commands for one just-in-time approval, as printed (and run by `check_approval`)."""
    trace = f"{url}/traces/traces/team-a/tr-a001.json"
    cli = f'.venv/bin/tracegate approvals {{}} --url {admin} --token "$SECURITY_TOKEN"'
    return [
        'curl -s -H "Authorization: Bearer $SUPPORT_TOKEN" -H "X-Tracegate-Purpose: incident" '
        f'-H "X-Tracegate-Reason: INC-1 demo" {trace}',
        cli.format("list"),
        cli.format("approve APPROVAL_ID --comment 'INC-1 confirmed'"),
    ]


def print_walkthrough(ask: str, listing: str, approve: str) -> None:
    print("# just-in-time approval: the request waits (up to 5 minutes) for a security lead")
    print(f"{ask} &")
    print("# ... who lists and approves it (or Resumes it in mitmweb: make demo WEB=1)")
    print(f"{listing}\n{approve}\n")


def check_approval(url: str, admin: str, env: dict[str, str]) -> bool:
    """Run the walkthrough: the request waits, the security lead approves, the data arrives."""
    ask, listing, approve = approval_walkthrough(url, admin)
    waiting = subprocess.Popen(
        ["bash", "-c", f"{ask} -o /dev/null -w '%{{http_code}}'"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        approval_id = ""
        deadline = time.monotonic() + 20
        while not approval_id and time.monotonic() < deadline:
            listed = subprocess.run(
                ["bash", "-c", listing], capture_output=True, text=True, env=env, cwd=REPO
            )
            found = re.search(r"^(apv_[0-9a-f]+)", listed.stdout, re.M)
            approval_id = found.group(1) if found else ""
            time.sleep(0.2)
        command = approve.replace("APPROVAL_ID", approval_id)
        subprocess.run(["bash", "-c", command], capture_output=True, env=env, cwd=REPO)
        status = waiting.communicate(timeout=30)[0].strip()
    finally:
        if waiting.poll() is None:
            waiting.kill()
    ok = bool(approval_id) and status == "200"
    print(f"  [{'ok ' if ok else 'FAIL'}] incident request held, approved, served: HTTP {status}")
    return ok


def write_aws_envs(url: str, tokens: dict[str, str], ca: Path) -> dict[str, Path]:
    """Per demo user, `demo-run/aws/<user>.env`: only `export` lines, what AWS tools read;
    over https, with the demo's CA (Rust object_store, polars' reader, calls STS over https
    only; it reads the CA from SSL_CERT_FILE)."""
    folder = RUN_DIR / "aws"
    folder.mkdir(exist_ok=True)
    files = {}
    for user in ("support", "analyst"):
        token_file = folder / f"{user}.token"
        token_file.write_text(tokens[user])
        token_file.chmod(0o600)
        lines = {
            "AWS_ENDPOINT_URL": url,
            "AWS_ENDPOINT_URL_STS": url,  # the Go SDK (rclone) reads only this one for STS
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
            "AWS_ROLE_ARN": f"arn:aws:iam::000000000000:role/{user}",
            "AWS_ROLE_SESSION_NAME": "debugging" if user == "support" else "analytics",
            "AWS_REGION": "us-east-1",
            "AWS_CA_BUNDLE": str(ca),
        }
        path = folder / f"{user}.env"
        path.write_text("".join(f"export {k}={v}\n" for k, v in lines.items()))
        files[user] = path
    return files


def aws_listing(env_file: Path) -> str:
    return f"source {env_file.relative_to(REPO)} && .venv/bin/aws s3 ls s3://traces/traces/team-a/"


def check_aws_cli(listing: str) -> bool:
    """The printed AWS CLI command, as printed, in a shell with no other AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    done = subprocess.run(
        ["bash", "-c", listing], capture_output=True, text=True, env=env, cwd=REPO, timeout=60
    )
    ok = done.returncode == 0 and "tr-a001.json" in done.stdout
    print(f"  [{'ok ' if ok else 'FAIL'}] the AWS CLI through STS: aws s3 ls")
    if not ok:
        print(done.stderr[-2000:])
    return ok


AUDIT_ORIGIN = "tracegate.demo/audit"
TRACEGATE = ".venv/bin/tracegate"


class AuditWitness:
    """The demo's checkpoint key and a `tracegate witness` on loopback: every checkpoint the
    gateway signs is cosigned by it and appended to demo-run/checkpoints/."""

    def __init__(self) -> None:
        self.key = RUN_DIR / "audit-key.pem"
        self.vkey = RUN_DIR / "audit-key.pem.vkey"
        self.state = RUN_DIR / "witness-state.json"
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.witness_key = ""

    def start(self) -> None:
        tracegate = str(Path(sys.executable).with_name("tracegate"))
        if not self.key.exists():
            argv = [tracegate, "audit", "keygen", str(self.key), "--origin", AUDIT_ORIGIN]
            subprocess.run(argv, check=True, capture_output=True)
        self.state.unlink(missing_ok=True)  # a fresh audit trail: the witness starts over too
        self.process = subprocess.Popen(
            [tracegate, "witness", "--state", str(self.state), "--key",
             str(RUN_DIR / "witness.pem"), "--name", "tracegate.demo/witness",
             "--log-key", str(self.vkey), "--port", str(port_or_free(8091))],
            stdout=subprocess.PIPE, stderr=open(RUN_DIR / "witness.log", "wb"),  # noqa: SIM115
            text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().rsplit(" ", 1)[1].strip()
        self.witness_key = self.process.stdout.readline().rsplit(" ", 1)[1].strip()

    def overrides(self) -> dict:
        return {
            "audit.signing_key_file": str(self.key),
            "audit.log_origin": AUDIT_ORIGIN,
            "audit.checkpoint_every_seconds": 2,
            "audit.publish": [
                {"directory": str(RUN_DIR / "checkpoints")},
                {"witness": {"url": self.url, "key": self.witness_key}},
            ],
        }

    def commands(self, flow_id: str, audit: str) -> list[tuple[str, str, str]]:
        """`audit`: the audit file, or `--dsn env:VAR` for the shared log."""
        vkey = self.vkey.relative_to(REPO)
        proof = (RUN_DIR / "flow.tlog-proof").relative_to(REPO)
        return [
            (
                "every entry, node and signed checkpoint, and what the witness cosigned",
                f"{TRACEGATE} audit verify {audit} --public-key {vkey} --witness {self.url}",
                ": ok",
            ),
            (
                "one flow's proof, for an auditor who never sees the database",
                f"{TRACEGATE} audit prove {audit} {flow_id} -o {proof}",
                "check it:",
            ),
            (
                "checked offline: the log's signature, the inclusion, the witness's cosignature",
                f"{TRACEGATE} audit check-proof {proof} --entry {proof}.entry "
                f"--public-key {vkey} --witness-key {self.witness_key}",
                ": ok: entry",
            ),
        ]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def last_served_flow(dsn: str | None) -> str:
    query = (
        "SELECT flow_id FROM flows WHERE decision = 'allow' AND status = 200 "
        "ORDER BY id DESC LIMIT 1"
    )
    if dsn is not None:
        import psycopg

        with psycopg.connect(dsn) as conn:
            found = conn.execute(query).fetchone()
        return found[0] if found else "FLOW_ID"
    import sqlite3

    conn = sqlite3.connect(RUN_DIR / "audit.sqlite3")
    try:
        found = conn.execute(query).fetchone()
    finally:
        conn.close()
    return found[0] if found else "FLOW_ID"


def check_audit(commands: list[tuple[str, str, str]], env: dict[str, str]) -> bool:
    """The printed audit commands, as printed (the proof once a checkpoint covers the flow)."""
    ok = True
    for description, command, expected in commands:
        deadline = time.monotonic() + 15
        while True:
            done = subprocess.run(
                ["bash", "-c", command],
                capture_output=True,
                text=True,
                cwd=REPO,
                timeout=60,
                env=env,
            )
            if expected in done.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # the covering checkpoint is at most checkpoint_every_seconds away
        good = done.returncode == 0 and expected in done.stdout
        ok &= good
        print(f"  [{'ok ' if good else 'FAIL'}] audit: {description}")
        if not good:
            print((done.stdout + done.stderr)[-2000:])
    return ok


def config_admin_port(config: Path) -> int:
    import yaml

    return int(yaml.safe_load(config.read_text())["admin"]["port"])


def wait_for_port(log: Path, process: subprocess.Popen, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_text(errors="replace"))
        if match:
            return int(match.group(1))
        if process.poll() is not None:
            raise SystemExit(f"demo: the gateway exited:\n{log.read_text()}")
        time.sleep(0.1)
    raise SystemExit("demo: the gateway did not start in time")


def mitmweb_url(log: Path, port: int, timeout: float = 10) -> str:
    """mitmweb logs its address with the access token it generated; print that one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(r"Web server listening at (\S+)", log.read_text(errors="replace"))
        if match:
            return match.group(1)
        time.sleep(0.1)
    return f"http://127.0.0.1:{port}/ (see {log.relative_to(REPO)} for the access token)"


def token_env(tokens: dict[str, str]) -> dict[str, str]:
    return dict(os.environ, **{f"{role.upper()}_TOKEN": token for role, token in tokens.items()})


def check(cmds: list[tuple[str, str, int]], tokens: dict[str, str], marker: str | None) -> bool:
    """Run the printed commands exactly as printed (through bash) and check their status, and
    the boto3 example when there is one (`marker` is what its output must show)."""
    env = token_env(tokens)
    ok = True
    for description, command, expected in cmds:
        result = subprocess.run(
            ["bash", "-c", f"{command} -o /dev/null -w '%{{http_code}}'"],
            capture_output=True,
            text=True,
            env=env,
        )
        status = int(result.stdout.strip() or 0)
        mark = "ok " if status == expected else "FAIL"
        ok &= status == expected
        print(f"  [{mark}] {description}: HTTP {status}")
    if marker is None:
        return ok
    example = RUN_DIR / "boto3_example.py"
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True)
    boto_ok = result.returncode == 0 and marker in result.stdout
    print(f"  [{'ok ' if boto_ok else 'FAIL'}] boto3 example ({example.relative_to(REPO)})")
    if not boto_ok:
        print(result.stderr[-2000:])
    return ok and boto_ok


CONSOLE_USERS = (  # (demo issuer user, subject, groups, what the console lets them do)
    ("security", "sec@example.com", ["security-leads"], "approver and auditor"),
    ("support", "alice@example.com", ["support-engineers"], "no console role: refused"),
)


def print_console(admin: str) -> None:
    print("# the console: approvals as they wait, and the audit trail with its charts")
    print(f"{admin}/console")
    for _, subject, _, can in CONSOLE_USERS:
        print(f"#   sign in as {subject} ({can})")
    print()


def check_console(admin: str) -> bool:
    """The console's sign-in, as a browser goes through it: the demo issuer's form, the code
    flow back to the console, and its approvals page (a browser test covers the rest)."""
    import httpx

    ok = False
    with httpx.Client(timeout=20) as browser:
        to_idp = browser.get(f"{admin}/console/login")
        form = browser.get(to_idp.headers.get("location", ""))
        query = dict(httpx.URL(str(form.url)).params)
        back = browser.post(str(form.url).split("?")[0], data={**query, "user": "security"})
        landed = browser.get(back.headers.get("location", ""), follow_redirects=True)
        ok = landed.status_code == 200 and landed.url.path == "/console/approvals"
    print(f"  [{'ok ' if ok else 'FAIL'}] the console: sign-in as sec@example.com, approvals page")
    return ok


def start_gateway(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description="run the tracegate demo")
    parser.add_argument("--web", action="store_true", help="also start the mitmweb UI")
    parser.add_argument("--check", action="store_true", help="verify the commands, then stop")
    parser.add_argument("--store", choices=["s3", "dynamodb", "langfuse"], default="s3")
    parser.add_argument(
        "--backend",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="postgres: two gateways sharing one local PostgreSQL (approvals, audit log)",
    )
    args = parser.parse_args()
    RUN_DIR.mkdir(exist_ok=True)
    for stale in RUN_DIR.glob("audit.sqlite3*"):  # each demo starts a fresh audit trail
        stale.unlink()
    dynamo, langfuse = args.store == "dynamodb", args.store == "langfuse"
    store: LocalS3 | LocalLangfuse
    if langfuse:
        store = LocalLangfuse(port=port_or_free(3000))
    else:
        store = (LocalDynamo if dynamo else LocalS3)(port=port_or_free(9000))
    issuer = TokenIssuer()
    gateways: list[subprocess.Popen] = []
    witness = AuditWitness()
    database = LocalPostgres() if args.backend == "postgres" else None
    try:
        dsn = None
        if database is not None:
            print("demo: starting a local PostgreSQL (Debian's server, in a temp dir)...")
            dsn = database.start().dsn("tracegate")
        if isinstance(store, LocalLangfuse):
            print("demo: starting a local Langfuse-shaped API (basic auth, two tenants)...")
            store.start()
        else:
            kind = "DynamoDB" if dynamo else "S3"
            print(f"demo: starting a local {kind} (moto server, signature checks on)...")
            store.start(log=RUN_DIR / "moto.log")
            store.seed(dynamodb_items() if dynamo else sample_objects())  # type: ignore[arg-type]
        issuer.serve(port=port_or_free(8900))
        for name, subject, groups, can in CONSOLE_USERS:
            issuer.add_user(name, subject, groups, can)
        witness.start()
        template = {"dynamodb": DYNAMODB_EXAMPLE, "langfuse": LANGFUSE_EXAMPLE}
        listen_port = port_or_free(8080)
        ca, certificate = local_ca(RUN_DIR / "tls")  # the listener speaks TLS and plain HTTP
        overrides: dict = {
            "listen.port": listen_port,
            "admin.port": port_or_free(8090),
            "listen.certificate": str(certificate),
            "console.enabled": args.store == "s3",  # the example config names its roles
            **witness.overrides(),
        }
        if args.store == "s3":  # S3 tools unchanged: the gateway is also their STS endpoint
            overrides["identity.sts"] = {
                "enabled": True,
                "public_host": f"127.0.0.1:{listen_port}",
            }
        if dsn is not None:
            overrides.update({"state": {"backend": "postgres"}, "audit.backend": "postgres"})

        def configure(name: str) -> Path:
            return write_config(
                RUN_DIR / name,
                store,
                issuer,
                RUN_DIR / "audit.sqlite3",
                template=template.get(args.store, EXAMPLE),
                **overrides,
            )

        config = configure("config.yaml")
        sts_keys = "demo:" + base64.b64encode(secrets.token_bytes(32)).decode()
        shared = {"TRACEGATE_DATABASE_URL": dsn} if dsn else {}
        env = gateway_env(store, secrets.token_hex(16), TRACEGATE_STS_KEYS=sts_keys, **shared)
        argv = [str(Path(sys.executable).with_name("tracegate")), "run", "--config", str(config)]
        web_port = port_or_free(8081)
        if args.web:
            argv += ["--web", "--web-port", str(web_port)]
        if dsn is not None:
            argv += ["--instance-id", "demo-a"]
        log = RUN_DIR / "gateway.log"
        gateways.append(start_gateway(argv, env, log))
        url = f"http://127.0.0.1:{wait_for_port(log, gateways[0])}"
        admin = f"http://127.0.0.1:{config_admin_port(config)}"
        second = None  # (url, admin): the other replica, with --backend postgres
        if dsn is not None:
            port_b = port_or_free(8082)
            overrides.update({"listen.port": port_b, "admin.port": port_or_free(8092)})
            if "identity.sts" in overrides:
                overrides["identity.sts"] = {"enabled": True, "public_host": f"127.0.0.1:{port_b}"}
            config_b = configure("config-b.yaml")
            argv_b = [argv[0], "run", "--config", str(config_b), "--instance-id", "demo-b"]
            log_b = RUN_DIR / "gateway-b.log"
            gateways.append(start_gateway(argv_b, env, log_b))
            second = (
                f"http://127.0.0.1:{wait_for_port(log_b, gateways[1])}",
                f"http://127.0.0.1:{config_admin_port(config_b)}",
            )
        tokens = {
            "support": issuer.token(
                "alice@example.com", ["support-engineers"], ttl=86400, tenant="acme"
            ),
            "analyst": issuer.token("bob@example.com", ["data-analysts"], ttl=86400, tenant="acme"),
            "security": issuer.token(
                "sec@example.com", ["security-leads"], ttl=86400, tenant="acme"
            ),
        }
        if not langfuse:
            example = (
                DYNAMODB_BOTO3.format(url=url, token=tokens["support"])
                if dynamo
                else boto3_example(url, tokens["support"])
            )
            (RUN_DIR / "boto3_example.py").write_text(example)
        if langfuse:
            cmds, marker = langfuse_commands(url), None
        elif dynamo:
            cmds, marker = dynamodb_commands(url), "[REDACTED:AWS_ACCESS_KEY_ID]"
        else:
            cmds, marker = commands(url), "[REDACTED:api-key]"
        print(f"\ntracegate is listening at {url} (config: {config.relative_to(REPO)})")
        https = url.replace("http://", "https://")
        print(f"and at {https} on the same port (the demo CA: {ca.relative_to(REPO)})")
        if second is not None:
            print(
                f"a second replica listens at {second[0]} (admin {second[1]}): both keep "
                "approvals, grants, sessions and the audit log in the demo's PostgreSQL"
            )
        if args.web:
            print(f"mitmweb UI: {mitmweb_url(log, web_port)}")
        print("\nTry these (tokens are valid for 24 hours):\n")
        print(f"export SUPPORT_TOKEN={tokens['support']}")
        print(f"export ANALYST_TOKEN={tokens['analyst']}")
        print(f"export SECURITY_TOKEN={tokens['security']}\n")
        for description, command, _ in cmds:
            print(f"# {description}\n{command}\n")
        # With two replicas, the request waits on the first and is approved on the second.
        ask, listing, approve = approval_walkthrough(url, second[1] if second else admin)
        if args.store == "s3":
            if second is not None:
                print("# two replicas: the request below waits on the first gateway; the")
                print("# security lead lists and approves it through the second one's admin API")
            print_walkthrough(ask, listing, approve)
        if args.store == "s3":
            aws_files = write_aws_envs(url.replace("http://", "https://"), tokens, ca)
            listing = aws_listing(aws_files["support"])
            print("# the AWS CLI (or boto3, polars, rclone...) with no code change, via STS:")
            print(f"{listing}\n")
        if marker is not None:
            print("# boto3 (the token goes in X-Tracegate-Token; see the file):")
            print(f".venv/bin/python {(RUN_DIR / 'boto3_example.py').relative_to(REPO)}\n")
        if dsn is not None:
            audit = "--dsn env:TRACEGATE_DATABASE_URL"
            print("# the shared audit log (the DSN stays in the environment, not in argv):")
            print(f"export TRACEGATE_DATABASE_URL={dsn}")
            print(f"{TRACEGATE} audit search {audit}\n")
        else:
            audit = str((RUN_DIR / "audit.sqlite3").relative_to(REPO))
            query = "select ts, subject, role, decision, reason from flows"
            print(f"# who read what:\nsqlite3 {audit} '{query}'\n")
        if args.store == "s3":
            print_console(admin)
        print(f"gateway log: {log.relative_to(REPO)}\n")
        print("checking the commands above:")
        ok = check(cmds, tokens, marker)
        if args.store == "s3":
            ok &= check_console(admin)
        if args.store == "s3":
            ok &= check_approval(url, second[1] if second else admin, token_env(tokens))
            ok &= check_aws_cli(listing)
        audit_commands = witness.commands(last_served_flow(dsn), audit)
        print("\n# the audit trail as an auditor checks it (checkpoints signed every 2 s,")
        print(f"# cosigned by the witness at {witness.url}, copied to demo-run/checkpoints/):")
        for description, command, _ in audit_commands:
            print(f"# {description}\n{command}")
        print()
        ok &= check_audit(audit_commands, {**os.environ, **shared})
        if args.check:
            return 0 if ok else 1
        print("\ndemo running; press Ctrl-C to stop everything.")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        while all(g.poll() is None for g in gateways):
            time.sleep(1)
        print("demo: a gateway exited; see its log in demo-run/")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("\ndemo: stopping...")
        for gateway in gateways:
            if gateway.poll() is None:
                gateway.terminate()
                try:
                    gateway.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    gateway.kill()
        issuer.stop()
        store.stop()
        witness.stop()
        if database is not None:
            database.stop()


if __name__ == "__main__":
    sys.exit(main())
