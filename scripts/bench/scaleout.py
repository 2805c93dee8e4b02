"""Throughput of one and two gateway processes on one PostgreSQL, beside one on SQLite.

    .venv/bin/python scripts/bench/scaleout.py [--requests 1000] [--rounds 3]

Each gateway as deployed with its backend: SQLite (the audit file, `synchronous=FULL`), or
PostgreSQL for state and the audit log (`state.backend` / `audit.backend: postgres`; each row
committed with `synchronous_commit=on` on a server with fsync on, one replica integrating the
Merkle log), a signed checkpoint every 100 entries. The same load (GETs of one small trace over
keep-alive connections, spread evenly over the gateways) runs against each set-up, interleaved
round by round. Beside req/s: the CPU each request costs the gateways and the database server
(Linux /proc), which is what says how it grows on a machine with more cores than this one.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_gateway", HERE / "gateway.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from tracegate.demo.postgres import LocalPostgres  # noqa: E402
from tracegate.demo.setup import gateway_env, write_config  # noqa: E402


def postgres_pids() -> list[int]:
    """The database server's processes (the only PostgreSQL this machine runs for the bench)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += bench.cpu_seconds(pid)
        except OSError:
            continue  # a backend that ended meanwhile
    return total


def run(urls: list[str], headers: dict, gateways: list[int], args) -> dict:
    requests = [(url, headers) for url in urls]
    database = postgres_pids()
    before = cpu_of(gateways), cpu_of(database)
    result = asyncio.run(bench.load(requests, args.requests, args.concurrency, None))
    database = sorted(set(database) | set(postgres_pids()))
    result["gateway_ms"] = (cpu_of(gateways) - before[0]) / args.requests * 1000
    result["db_ms"] = (cpu_of(database) - before[1]) / args.requests * 1000
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tracegate-bench-scaleout-"))
    store = bench.LocalS3().start(log=work / "moto.log")
    issuer = bench.TokenIssuer()
    database = LocalPostgres(durable=True)
    processes = []
    try:
        store.seed(bench.sample_objects())
        issuer.serve()
        database.start()
        dsn = database.dsn("tracegate")
        from tracegate.audit.keys import SigningKey

        SigningKey.generate(work / "audit-key.pem")
        common = {
            "admin.enabled": False,
            "logging.decisions": "none",
            "audit.signing_key_file": str(work / "audit-key.pem"),
            "audit.checkpoint_every_rows": 100,
        }
        shared = {"state": {"backend": "postgres"}, "audit.backend": "postgres"}
        env = gateway_env(store, "bench-hash-key", TRACEGATE_DATABASE_URL=dsn)

        def start(name: str, overrides: dict) -> tuple[str, int]:
            config = write_config(
                work / f"{name}.yaml", store, issuer, work / f"{name}.sqlite3", **overrides
            )
            argv = [str(bench.BIN / "tracegate"), "run", "--config", str(config)]
            argv += ["--listen-port", "0", "--instance-id", name]
            process, port = bench.start_proxy(argv, env, work / f"{name}.log")
            processes.append(process)
            return f"http://127.0.0.1:{port}/traces/{bench.KEY}", process.pid

        sqlite = start("sqlite", common)
        pg_a = start("pg-a", {**common, **shared})
        pg_b = start("pg-b", {**common, **shared})
        token = issuer.token("bench", ["support-engineers"])
        headers = {"authorization": f"Bearer {token}"}
        setups = {
            "1 gateway, SQLite": ([sqlite[0]], [sqlite[1]]),
            "1 gateway, PostgreSQL": ([pg_a[0]], [pg_a[1]]),
            "2 gateways, PostgreSQL": ([pg_a[0], pg_b[0]], [pg_a[1], pg_b[1]]),
        }
        runs: dict[str, list[dict]] = {name: [] for name in setups}
        for _ in range(args.rounds):
            for name, (urls, pids) in setups.items():
                runs[name].append(run(urls, headers, pids, args))
        results = {
            n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()
        }
        baseline = results["1 gateway, SQLite"]["rps"]
        print(
            f"\nmedian of {args.rounds} interleaved rounds of {args.requests} GETs, "
            f"{args.concurrency} keep-alive connections, loopback, {os.cpu_count()} cores; "
            "PostgreSQL with fsync on; CPU per request from /proc"
        )
        print(
            f"{'set-up':<25}{'req/s':>8}{'vs SQLite':>11}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'errors':>8}{'gateway CPU':>13}{'database CPU':>14}"
        )
        for name, r in results.items():
            print(
                f"{name:<25}{r['rps']:>8.0f}{r['rps'] / baseline:>10.0%}{r['p50']:>8.1f}"
                f"{r['p99']:>8.1f}{r['errors']:>8.0f}{r['gateway_ms']:>10.2f} ms"
                f"{r['db_ms']:>11.2f} ms"
            )
        return 0
    finally:
        for process in processes:
            bench.stop(process)
        issuer.stop()
        store.stop()
        database.stop()


if __name__ == "__main__":
    sys.exit(main())
