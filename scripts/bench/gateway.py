"""Throughput and latency: direct to the store, through plain mitmdump, through tracegate.

All three run side by side in one process tree on loopback, against the same store and the
same request, with the same client (httpx, keep-alive, N concurrent workers):

    .venv/bin/python scripts/bench/gateway.py [--requests 1500] [--concurrency 8]
    .venv/bin/python scripts/bench/gateway.py --store langfuse   # an `http` store (route map)

S3: one small trace and one realistic ~10 KB export (OTLP chat spans repeating their history,
JSON tool results, digit-heavy strings: `tests.corpus.realistic_export`) from moto, each its
own table, every GET reading the same object: repeated reads, which tracegate answers from its
memo of masked bodies. A third table reads a different realistic export on every GET of every
round (generated with another seed each, seeded up front), so nothing is remembered but what
traces share (a system prompt, tool definitions); `scripts/bench/masking.py` measures masking
of new data in process. Direct and plain-mitmdump requests carry a SigV4 signature. A last S3
table reads the small trace through the same gateway with a bearer token and with credentials
from the gateway's STS, each request's SigV4 signature checked (signed once per round).
Langfuse: a page of 20 traces with their observations from the Langfuse-shaped server in its
own process; direct and plain-mitmdump requests carry the project's key pair. tracegate
requests carry a bearer token and the gateway signs or injects its own credentials (and filters
the page to one tenant).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "addons"), str(REPO)]

from tests.corpus import realistic_export  # noqa: E402
from tracegate.demo.issuer import TokenIssuer  # noqa: E402
from tracegate.demo.langfuse import LocalLangfuse  # noqa: E402
from tracegate.demo.setup import LANGFUSE_EXAMPLE, gateway_env, write_config  # noqa: E402
from tracegate.demo.store import LocalS3, free_port  # noqa: E402
from tracegate.demo.traces import sample_objects  # noqa: E402
from tracegate.sts import read_answer  # noqa: E402

KEY = "traces/team-a/tr-a001.json"
REALISTIC_KEY = "traces/team-a/export-10k.json"
DISTINCT_PREFIX = "traces/team-a/distinct/"
WARM_UP = 50
STS_KEYS = "bench:" + base64.b64encode(b"b" * 32).decode()
LANGFUSE_PAGE = "/api/public/traces?limit=20&page=1"
BIN = Path(sys.executable).parent
LISTENING = re.compile(r"listening at [\d.]+:(\d+)")


def signed_headers(store: LocalS3, url: str) -> dict[str, str]:
    keys = store.seeder_keys
    assert keys is not None
    request = AWSRequest(method="GET", url=url, headers={"host": url.split("/")[2]})
    S3SigV4Auth(
        Credentials(keys.access_key_id, keys.secret_access_key), "s3", "us-east-1"
    ).add_auth(request)
    return dict(request.headers.items())


def start_proxy(argv: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    process = subprocess.Popen(
        argv,
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_text(errors="replace"))
        if match:
            return process, int(match.group(1))
        if process.poll() is not None:
            raise SystemExit(f"proxy exited:\n{log.read_text()}")
        time.sleep(0.05)
    raise SystemExit("proxy did not start")


def cpu_seconds(pid: int | None) -> float:
    """User+system CPU time of a process (Linux /proc), 0 when not measured."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


async def load(
    requests: list[tuple[str, dict[str, str]]], total: int, concurrency: int, pid: int | None
) -> dict:
    """`total` GETs after WARM_UP ones; GET number n asks for `requests[n]` (cycled), so a list
    as long as the run reads a different object each time."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(total):
        queue.put_nowait(WARM_UP + n)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for n in range(min(WARM_UP, total)):  # warm up connections and caches
            url, headers = requests[n % len(requests)]
            await client.get(url, headers=headers)

        async def worker() -> None:
            nonlocal errors
            while True:
                try:
                    n = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                url, headers = requests[n % len(requests)]
                started = time.perf_counter()
                response = await client.get(url, headers=headers)
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    errors += 1

        started, cpu_before = time.perf_counter(), cpu_seconds(pid)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    latencies.sort()
    return {
        "rps": total / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": errors,
        "cpu_ms": cpu / total * 1000,
    }


def token_throughput(issuer: TokenIssuer, seconds: float = 1.0) -> tuple[float, float]:
    """Validations per second of one token: through the cache, and with a full check each time."""
    from tracegate.config import IdentityConfig
    from tracegate.identity.oidc import TokenValidator

    config = IdentityConfig(
        providers=[
            {
                "name": "b",
                "issuer": issuer.issuer,
                "audience": "tracegate",
                "jwks_uri": issuer.jwks_uri,
            }
        ]
    )
    validator = TokenValidator(config)
    token = issuer.token("bench", ["support-engineers"])

    async def rate(check) -> float:
        await validator.validate(token)  # fetch keys, fill the cache
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await check(token)
            count += 1
        return count / (time.perf_counter() - started)

    cached = asyncio.run(rate(validator.validate))
    uncached = asyncio.run(rate(validator._validate))
    return cached, uncached


def start_langfuse(work: Path) -> tuple[LocalLangfuse, subprocess.Popen]:
    """The Langfuse-shaped API in a process of its own, so it does not share the client's GIL."""
    api = LocalLangfuse(port=free_port())
    argv = [sys.executable, "-m", "tracegate.demo.langfuse", "--port", str(api.port)]
    argv += ["--public-key", api.public_key, "--secret-key", api.secret_key]
    env = dict(os.environ, PYTHONPATH=str(REPO / "addons"))
    process, _ = start_proxy(argv, env, work / "langfuse.log")
    return api, process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="per target and round")
    parser.add_argument("--rounds", type=int, default=3, help="targets alternate each round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--store", choices=["s3", "langfuse"], default="s3")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tracegate-bench-"))
    issuer = TokenIssuer()
    processes: list[subprocess.Popen] = []
    store: LocalS3 | LocalLangfuse | None = None
    try:
        if args.store == "langfuse":
            store, server = start_langfuse(work)
            processes.append(server)
            path, template = LANGFUSE_PAGE, LANGFUSE_EXAMPLE
            pair = base64.b64encode(f"{store.public_key}:{store.secret_key}".encode()).decode()
            basic = {"authorization": f"Basic {pair}"}
            store_headers = lambda url: basic  # noqa: E731 (the same for every URL)
            what = "a page of 14 Langfuse traces (tracegate serves the 7 of one tenant, masked)"
        else:
            store = LocalS3()
            store.start(log=work / "moto.log")
            objects = sample_objects()
            export = {"resourceSpans": [{"scopeSpans": [{"spans": realistic_export(9_000)}]}]}
            objects[REALISTIC_KEY] = (json.dumps(export).encode(), "application/json")
            # A different export for every GET of every round: nothing to remember.
            distinct = [
                [f"/traces/{DISTINCT_PREFIX}{r}-{n}.json" for n in range(args.requests + WARM_UP)]
                for r in range(args.rounds)
            ]
            for n, p in enumerate(p for paths in distinct for p in paths):
                spans = realistic_export(9_000, seed=1000 + n)
                body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]})
                objects[p.removeprefix("/traces/")] = (body.encode(), "application/json")
            store.seed(objects)
            store_headers = lambda url: signed_headers(store, url)  # noqa: E731
            path, template = f"/traces/{KEY}", None
            what = "one masked trace"
        issuer.serve()
        extra: dict = {"template": template} if template else {}
        public_port = free_port()  # S3: the gateway also serves STS, whose clients sign for it
        if args.store == "s3":
            sts = {"enabled": True, "public_host": f"127.0.0.1:{public_port}"}
            extra["identity.sts"] = sts
        write_config(work / "config.yaml", store, issuer, work / "audit.sqlite3", **extra)
        env = gateway_env(store, "bench-hash-key", TRACEGATE_STS_KEYS=STS_KEYS)
        common = ["--mode", f"reverse:{store.endpoint}", "--listen-host", "127.0.0.1"]
        common += ["--set", "flow_detail=0"]
        plain, plain_port = start_proxy(
            [str(BIN / "mitmdump"), *common, "--listen-port", "0"], env, work / "plain.log"
        )
        processes.append(plain)
        gated, gated_port = start_proxy(
            [
                str(BIN / "mitmdump"),
                "-s",
                str(REPO / "addons" / "gateway.py"),
                "--set",
                f"tracegate_config={work / 'config.yaml'}",
                *common,
                "--listen-port",
                str(public_port if args.store == "s3" else 0),
            ],
            env,
            work / "tracegate.log",
        )
        processes.append(gated)
        token = issuer.token("bench", ["support-engineers"], tenant="acme")
        benches = [([[path]], what)]
        if args.store == "s3":
            realistic = "a realistic ~10 KB trace export"
            benches.append(([[f"/traces/{REALISTIC_KEY}"]], f"{realistic}, the same object"))
            benches.append((distinct, f"{realistic}, a different object each GET"))
        ports = (plain_port, gated_port, plain.pid, gated.pid)
        for paths, what in benches:
            run_bench(args, store, paths, what, store_headers, token, ports)
        if args.store == "s3":
            run_identity_bench(args, store, path, store_headers, token, ports)
        cached, uncached = token_throughput(issuer)
        print(
            f"\ntoken validations/s in one process: {cached:,.0f} with the cache, "
            f"{uncached:,.0f} with a full signature check each time ({cached / uncached:.0f}x)"
        )
        return 0
    finally:
        for process in processes:
            stop(process)
        issuer.stop()
        if isinstance(store, LocalS3):
            store.stop()


def sts_signed_headers(gateway: str, path: str, token: str) -> dict[str, str]:
    """Credentials from the gateway's STS for the token, and a SigV4 signature made with them
    once up front (within the 15-minute skew the gateway accepts a repeated signature)."""
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": "arn:aws:iam::000000000000:role/support",
        "RoleSessionName": "debugging",
        "WebIdentityToken": token,
    }
    answer = read_answer(httpx.post(gateway + "/", data=form, timeout=15).content)
    credentials = Credentials(
        answer["AccessKeyId"], answer["SecretAccessKey"], answer["SessionToken"]
    )
    request = AWSRequest(method="GET", url=gateway + path, headers={"host": gateway[7:]})
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def run_identity_bench(args, store, path: str, store_headers, token: str, ports) -> None:
    """The same GET through the same gateway: a bearer token vs STS credentials and SigV4."""
    plain_port, gated_port, plain_pid, gated_pid = ports
    gateway = f"http://127.0.0.1:{gated_port}"
    targets = [
        ("plain mitmdump", f"http://127.0.0.1:{plain_port}", None, plain_pid),
        ("tracegate, bearer token", gateway, {"authorization": f"Bearer {token}"}, gated_pid),
        ("tracegate, STS + SigV4", gateway, "sigv4", gated_pid),
    ]
    rounds: dict[str, list[dict]] = {}
    for _ in range(args.rounds):
        for name, origin, headers, pid in targets:
            if headers is None:
                headers = store_headers(store.endpoint + path)
            elif headers == "sigv4":  # fresh credentials and signature each round
                headers = sts_signed_headers(gateway, path, token)
            rounds.setdefault(name, []).append(
                asyncio.run(load([(origin + path, headers)], args.requests, args.concurrency, pid))
            )
    print_table(
        rounds,
        f"{args.requests} GETs of one masked trace, boto3-style identities: a bearer token "
        "vs credentials from the gateway's STS, each request's SigV4 signature checked",
        args,
    )


def run_bench(
    args, store, paths: list[list[str]], what: str, store_headers, token: str, ports
) -> None:
    """One table: the same GETs direct, through plain mitmdump and through tracegate.
    `paths[r]` are the objects of round r (one path: every GET reads the same object)."""
    plain_port, gated_port, plain_pid, gated_pid = ports
    bearer = {"authorization": f"Bearer {token}"}
    rounds: dict[str, list[dict]] = {}
    for r in range(args.rounds):  # interleaved, so drift on a shared machine hits all alike
        chosen = paths[r % len(paths)]
        targets = [
            ("direct to the store", store.endpoint, store_headers, None),
            ("plain mitmdump", f"http://127.0.0.1:{plain_port}", store_headers, plain_pid),
            ("tracegate (mitmdump -s)", f"http://127.0.0.1:{gated_port}", None, gated_pid),
        ]
        for name, origin, headers_for, pid in targets:
            requests = [
                (origin + p, bearer if headers_for is None else headers_for(store.endpoint + p))
                for p in chosen
            ]
            rounds.setdefault(name, []).append(
                asyncio.run(load(requests, args.requests, args.concurrency, pid))
            )
    size = len(httpx.get(f"http://127.0.0.1:{gated_port}{paths[0][0]}", headers=bearer).content)
    print_table(rounds, f"{args.requests} GETs of {what} ({size} bytes served by tracegate)", args)


def print_table(rounds: dict[str, list[dict]], what: str, args) -> None:
    results = {
        name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for name, runs in rounds.items()
    }
    baseline = results["plain mitmdump"]["rps"]
    print(
        f"\nmedian of {args.rounds} interleaved rounds of {what}, "
        f"{args.concurrency} concurrent keep-alive connections, loopback, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'target':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs mitmdump':>13}"
        f"{'proxy CPU ms/req':>18}{'errors':>8}"
    )
    for name, r in results.items():
        cpu = f"{r['cpu_ms']:.2f}" if r["cpu_ms"] else "-"
        print(
            f"{name:<26}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
            f"{r['rps'] / baseline:>12.0%}{cpu:>18}{r['errors']:>8}"
        )


if __name__ == "__main__":
    sys.exit(main())
