"""Throughput of ordinary requests while 20 requests are held for approval, against none held.

One tracegate (`mitmdump -s`) in front of moto S3 on loopback. Each round measures the same load
(keep-alive GETs of one masked trace by a role that needs no approval) twice, interleaved: with
no request held, and with 20 distinct incident requests held waiting for approvers (their clients
then leave, which cancels the approvals):

    .venv/bin/python scripts/bench/approvals.py [--requests 600] [--rounds 3] [--held 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import BIN, KEY, REPO, load, start_proxy, stop

from tracegate.demo.issuer import TokenIssuer
from tracegate.demo.setup import gateway_env, write_config
from tracegate.demo.store import LocalS3
from tracegate.demo.traces import sample_objects

INCIDENT_RULES = [
    {
        "id": "incident-read",
        "when": {"always": True},
        "approvers": {"roles": ["security"]},
        "wait_seconds": 600,
    }
]


def pending(audit: Path) -> int:
    conn = sqlite3.connect(audit)
    try:
        return conn.execute("SELECT count(*) FROM approvals WHERE status = 'pending'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


async def measure(
    url: str, token: str, held: int, audit: Path, requests: int, concurrency: int, pid: int
) -> dict:
    """The load, with `held` incident requests waiting for approval meanwhile."""
    before = pending(audit)
    holders: list[asyncio.Task] = []
    client = httpx.AsyncClient(timeout=700, limits=httpx.Limits(max_connections=held + 1))
    headers = {
        "authorization": f"Bearer {token}",
        "x-tracegate-purpose": "incident",
        "x-tracegate-reason": "bench",
    }
    for n in range(held):
        path = f"/traces/traces/team-a/held-{time.monotonic_ns()}-{n}.json"
        holders.append(asyncio.create_task(client.get(url + path, headers=headers)))
    deadline = time.monotonic() + 30
    while pending(audit) < before + held:
        if time.monotonic() > deadline:
            raise SystemExit("the requests were not held")
        await asyncio.sleep(0.05)
    result = await load(
        url + f"/traces/{KEY}", {"authorization": f"Bearer {token}"}, requests, concurrency, pid
    )
    result["held_during"] = pending(audit)
    for task in holders:
        task.cancel()  # the clients leave: their approvals are cancelled
    await asyncio.gather(*holders, return_exceptions=True)
    await client.aclose()
    while pending(audit) > 0 and time.monotonic() < deadline + 30:
        await asyncio.sleep(0.05)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--held", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tracegate-bench-approvals-"))
    store = LocalS3().start(log=work / "moto.log")
    issuer = TokenIssuer()
    gated = None
    try:
        store.seed(sample_objects())
        issuer.serve()
        audit = work / "audit.sqlite3"
        overrides = {"roles.support.scopes.incident.approvals": INCIDENT_RULES}
        write_config(work / "config.yaml", store, issuer, audit, **overrides)
        gated, port = start_proxy(
            [
                str(BIN / "mitmdump"),
                "-s",
                str(REPO / "addons" / "gateway.py"),
                "--set",
                f"tracegate_config={work / 'config.yaml'}",
                "--mode",
                f"reverse:{store.endpoint}",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                "0",
                "--set",
                "flow_detail=0",
            ],
            gateway_env(store, "bench-hash-key"),
            work / "tracegate.log",
        )
        url = f"http://127.0.0.1:{port}"
        token = issuer.token("bench@example.com", ["support-engineers"])
        runs: dict[int, list[dict]] = {0: [], args.held: []}
        for _ in range(args.rounds):
            for held in runs:
                runs[held].append(
                    asyncio.run(
                        measure(url, token, held, audit, args.requests, args.concurrency, gated.pid)
                    )
                )
        results = {
            held: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            for held, rs in runs.items()
        }
        baseline = results[0]["rps"]
        print(
            f"\nmedian of {args.rounds} interleaved rounds of {args.requests} GETs, "
            f"{args.concurrency} keep-alive connections, loopback, {os.cpu_count()} cores"
        )
        print(
            f"{'requests held':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs none held':>14}"
            f"{'proxy CPU ms/req':>18}{'errors':>8}"
        )
        for r in results.values():
            print(
                f"{int(r['held_during']):<16}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}"
                f"{r['rps'] / baseline:>13.0%}{r['cpu_ms']:>18.2f}{r['errors']:>8}"
            )
        return 0
    finally:
        if gated is not None:
            stop(gated)
        issuer.stop()
        store.stop()


if __name__ == "__main__":
    sys.exit(main())
