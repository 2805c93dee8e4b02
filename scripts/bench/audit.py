"""Gateway throughput with the audit trail on, against the same gateway with it stubbed out.

    .venv/bin/python scripts/bench/audit.py [--requests 1000] [--rounds 5]

The audit trail as deployed: every row an entry of the Merkle log, written by the gateway's
writer process (`audit.writer`, default), checkpoints signed every `--checkpoint-rows` entries
and appended to a directory sink. The product has no "audit off" switch (it fails closed
without its audit); for this measurement only, the second gateway process gets a
`sitecustomize.py` that makes `record` return at once (the writer process's and the thread's).
Both run side by side against the same moto S3, interleaved round by round (each round runs
both back to back, the order alternating); the ratio is the median of the rounds' own ratios.

Before the gateways start, a second table: what one durable commit costs the writer and the
whole machine (an fsync on a VM shows as interrupt work and as time the hypervisor takes),
against the same commits without the fsync.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_gateway", HERE / "gateway.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

from tracegate.audit.bodies import body_record, request_summary  # noqa: E402
from tracegate.audit.log import AuditLog, AuditRecord, rows_of  # noqa: E402
from tracegate.demo.setup import gateway_env, write_config  # noqa: E402

NO_AUDIT = (
    "import tracegate.audit.log as log\n"
    "import tracegate.audit.writer as writer\n"
    "async def record(self, record):\n"
    "    return None\n"
    "log.AuditLog.record = record\n"
    "writer.ProcessAuditLog.record = record\n"
)


def processes_cpu(pid: int) -> float:
    """CPU seconds of a gateway and of its children (the audit writer process)."""
    total = bench.cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            total += bench.cpu_seconds(int(stat.parent.name))
    return total


def machine_cpu_seconds() -> float:
    """CPU time the whole machine spent busy (/proc/stat), including what the hypervisor took
    (steal) and interrupt handling: where an fsync's cost shows beside the process's own."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def flow_record(n: int, body: bytes) -> AuditRecord:
    """A row shaped as the gateway writes one for this bench's GET (its fields, the masking
    report of the bench object's rules, the served body and request summary)."""
    masks = {
        "documents": 1,
        "rules": {
            name: {"action": "redact", "count": 1, "paths": [f"$.metadata.{name}"]}
            for name in ("api_key", "email", "phone", "ssn", "card")
        },
    }
    request = request_summary(
        "GET", f"/traces/{bench.KEY}", [], {"host": "127.0.0.1", "accept": "*/*"}, []
    )
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    digest = hashlib.sha256(body).hexdigest()  # nothing masked in this row's stand-in body
    return AuditRecord(
        flow_id=str(uuid.uuid4()),
        method="GET",
        path=f"/traces/{bench.KEY}",
        decision="allow",
        reason="GetObject within support/debugging scope",
        status=200,
        session_id=str(uuid.uuid4()),
        policy_version="0e34eee0db389745",
        client="127.0.0.1",
        subject="bench",
        issuer="http://127.0.0.1:8443",
        roles=["support"],
        role="support",
        purpose="debugging",
        operation="GetObject",
        resource=f"s3://traces/{bench.KEY}",
        masks=masks,
        bytes_upstream=len(body),
        bytes_returned=len(body),
        latency_ms=20.0,
        upstream_sha256=digest,
        returned_sha256=digest,
        identity="oidc",
        body=body_record(str(n), request, 200, headers, body, 1 << 20, 0.0, 0.0),
    )


def commit_cost(work: Path, rows: int) -> list[tuple[str, float, float]]:
    """One flow's row, each in its own commit, as the writer makes them under light load:
    the writer's CPU and the machine's per row, durable (`synchronous=FULL`, as shipped)
    and, for comparison only, without the fsync."""
    body = bench.sample_objects()[bench.KEY][0]
    kinds = (("durable (as shipped)", None), ("no fsync (comparison)", "NORMAL"))
    spent: dict[str, list[float]] = {label: [0.0, 0.0] for label, _ in kinds}
    for number, (label, pragma) in enumerate(kinds * 2):  # alternating, twice each
        log = AuditLog(work / f"commit-{number}.sqlite3")
        db = log.connect()
        if pragma:
            db.conn.execute(f"PRAGMA synchronous={pragma}")
        records = [flow_record(n, body) for n in range(rows)]
        process, machine = time.process_time(), machine_cpu_seconds()
        for record in records:
            _, rows_made, bodies = rows_of([(record,)])
            db = log.commit_rows(db, rows_made, bodies)
        spent[label][0] += time.process_time() - process
        spent[label][1] += machine_cpu_seconds() - machine
        log.finish(db)
    return [(label, p / rows / 2 * 1000, m / rows / 2 * 1000) for label, (p, m) in spent.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--checkpoint-rows", type=int, default=100)
    parser.add_argument("--commit-rows", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tracegate-bench-audit-"))
    # First, alone on the machine: what one commit costs (the fsync's share of the gap).
    costs = commit_cost(work, args.commit_rows)
    store = bench.LocalS3().start(log=work / "moto.log")
    issuer = bench.TokenIssuer()
    processes = []
    try:
        store.seed(bench.sample_objects())
        issuer.serve()
        from tracegate.audit.keys import SigningKey

        SigningKey.generate(work / "audit-key.pem")
        overrides = {
            "admin.enabled": False,
            "logging.decisions": "none",
            "audit.signing_key_file": str(work / "audit-key.pem"),
            "audit.checkpoint_every_rows": args.checkpoint_rows,
            "audit.publish": [{"directory": str(work / "checkpoints")}],
        }
        write_config(work / "config.yaml", store, issuer, work / "audit.sqlite3", **overrides)
        site = work / "no-audit"
        site.mkdir()
        (site / "sitecustomize.py").write_text(NO_AUDIT)
        env = gateway_env(store, "bench-hash-key")
        argv = [str(bench.BIN / "tracegate"), "run", "--config", str(work / "config.yaml")]
        argv += ["--listen-port", "0"]
        on, on_port = bench.start_proxy(argv, env, work / "on.log")
        off, off_port = bench.start_proxy(argv, {**env, "PYTHONPATH": str(site)}, work / "off.log")
        processes += [on, off]
        token = issuer.token("bench", ["support-engineers"])
        headers = {"authorization": f"Bearer {token}"}
        targets = [
            ("Merkle log on", f"http://127.0.0.1:{on_port}/traces/{bench.KEY}", on.pid),
            ("audit stubbed out", f"http://127.0.0.1:{off_port}/traces/{bench.KEY}", off.pid),
        ]
        runs: dict[str, list[dict]] = {name: [] for name, *_ in targets}
        ratios = []
        for number in range(args.rounds):
            # Each round runs both, first one then the other, then the other way round: a
            # machine that speeds up or slows down during the run favours neither.
            order = targets if number % 2 == 0 else targets[::-1]
            for name, url, pid in order:
                before = processes_cpu(pid)
                result = asyncio.run(
                    bench.load([(url, headers)], args.requests, args.concurrency, None)
                )
                result["cpu_ms"] = (processes_cpu(pid) - before) / args.requests * 1000
                runs[name].append(result)
            on, off = (runs[name][-1] for name, *_ in targets)
            ratios.append(on["rps"] / off["rps"])
        results = {
            n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()
        }
        print(
            f"\nmedian of {args.rounds} rounds of {args.requests} GETs each, {args.concurrency} "
            f"keep-alive connections, loopback, {os.cpu_count()} cores; a signed checkpoint every "
            f"{args.checkpoint_rows} entries, published to a directory"
        )
        print(
            f"{'gateway':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'vs stubbed':>12}"
            f"{'CPU ms/req':>12}"
        )
        for name, r in results.items():
            ratio = statistics.median(ratios) if name == "Merkle log on" else 1.0
            print(
                f"{name:<20}{r['rps']:>9.0f}{r['p50']:>9.1f}{r['p99']:>9.1f}{ratio:>11.0%}"
                f"{r['cpu_ms']:>12.2f}"
            )
        print(
            "vs stubbed: the median of the rounds' ratios (each round ran both back to back); "
            f"per round: {', '.join(f'{r:.0%}' for r in ratios)}. CPU: the gateway and its "
            "audit writer process."
        )
        print(
            f"\none row per commit, {args.commit_rows} commits twice each way, alternating, "
            "before the gateways start"
        )
        print(f"{'commit':<24}{'writer CPU ms':>15}{'machine CPU ms':>16}")
        for label, process, machine in costs:
            print(f"{label:<24}{process:>15.2f}{machine:>16.2f}")
        return 0
    finally:
        for process in processes:
            bench.stop(process)
        issuer.stop()
        store.stop()


if __name__ == "__main__":
    sys.exit(main())
