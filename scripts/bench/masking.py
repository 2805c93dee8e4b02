"""Masking speed and memory: tracegate's detectors against a plain JSON round trip.

    .venv/bin/python scripts/bench/masking.py [--sizes 1,20] [--repeat 3] [--cli-mb 60]

For each size, one trace body of realistic prose in trace shapes (OTLP spans, Langfuse-style
traces, chat logs) is generated, then timed side by side: json.loads + json.dumps (the floor:
any masking must at least parse and serialise), and tracegate's Masker with every detector on
(hyperscan prefilter, then the `re` fallback), and the same Masker with no detector (the floor
of walking every value and parsing the JSON-in-strings). Peak memory is measured in a fresh
child process per size: the growth of its maximum RSS while masking, as a multiple of the body
size, with a masker that is built and warmed up first as in a running gateway, and cold (built
and used for the first time inside the measurement: fixed costs that weigh on small bodies).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "addons"), str(REPO)]

from tests.corpus import realistic_export  # noqa: E402
from tracegate.config import ScopeConfig  # noqa: E402
from tracegate.masking import Masker, MaskReport  # noqa: E402

SCOPE = ScopeConfig(operations=["GetObject"], prefixes=[""])  # default: every detector on
# No detector at all: what is left is the walk over every value, the JSON-in-strings parsed and
# written back, the body read and written: the floor of this design, whatever the detectors.
NO_DETECTORS = ScopeConfig(operations=["GetObject"], prefixes=[""], detectors={"run": []})


def body_of(megabytes: float) -> bytes:
    documents = realistic_export(int(megabytes * 1_000_000))
    return json.dumps({"traces": documents}, ensure_ascii=False).encode()


def round_trip(body: bytes) -> bytes:
    """The floor, with the cyclic GC paused as tracegate's masking does (a strict baseline)."""
    gc.disable()
    try:
        return json.dumps(json.loads(body), ensure_ascii=False).encode()
    finally:
        gc.enable()


def best_of(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def fresh(m: Masker) -> Masker:
    """Forget what earlier runs found: each timed run reads the body as new data (the cache
    across bodies would otherwise answer every string of a repeated body)."""
    from tracegate.detectors.scanner import FindingsCache
    from tracegate.masking.memo import MaskedBodies

    m._text.scanner.cache = FindingsCache()
    m._bodies = MaskedBodies()
    return m


def masker(engine: str, scope: ScopeConfig = SCOPE) -> Masker:
    m = Masker(scope, b"bench-key")
    if engine == "re":
        from tracegate.detectors.scanner import Scanner

        m._text.scanner = Scanner(m._text.scanner.detectors, use_hyperscan=False)
    return m


ROUND_TRIP = "import json\nout = json.dumps(json.loads(body), ensure_ascii=False).encode()\n"
# A gateway builds its maskers at config load and has masked before: the warm-up (a small
# trace through every detector, which loads e.g. phone number metadata) happens before the
# baseline. The cold column puts masker construction and first use inside the measurement.
BUILD = (
    "from tracegate.config import ScopeConfig\n"
    "from tracegate.masking import Masker, MaskReport\n"
    "from tests.corpus import realistic_export\n"
    "import json\n"
    "m = Masker(ScopeConfig(operations=['GetObject'], prefixes=['']), b'k')\n"
)
WARM_UP = (
    "small = json.dumps(realistic_export(20000)).encode()\n"
    "m.mask_body(small, 'json', MaskReport())\n"
)
MASKING = "out = m.mask_body(body, 'json', MaskReport())\n"


def peak_rss_ratio(body: bytes, work: str = MASKING, setup: str = "") -> float:
    """Run `work` once in a fresh process after `setup`; growth of its peak RSS / body size."""
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        handle.write(body)
        handle.flush()
        code = (
            "import resource, sys\n"
            f"sys.path[:0] = [{str(REPO / 'addons')!r}, {str(REPO)!r}]\n"
            "import tracegate.masking\n"  # imports before the baseline
            f"body = open({handle.name!r}, 'rb').read()\n" + setup + ""
            # VmHWM, not ru_maxrss: the latter survives exec and holds the parent's peak.
            "def hwm():\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmHWM:'):\n"
            "            return int(line.split()[1]) * 1024\n"
            "before = hwm()\n" + work + "print(hwm() - before)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
    return int(result.stdout.strip()) / len(body)


def cli_rows(megabytes: float) -> list[tuple[str, float]]:
    """Whole processes on one file: `tracegate mask --detectors all` and a stdlib round trip."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.json"
        path.write_bytes(body_of(megabytes))
        out = Path(tmp) / "out"
        commands = [
            (
                "python -c json.dump(json.load(f))",
                [sys.executable, "-c", "import json,sys; json.dump(json.load(open(sys.argv[1])), "
                 "open(sys.argv[2], 'w'))", str(path), str(Path(tmp) / "rt.json")],
            ),
            (
                "tracegate mask --detectors all",
                [str(Path(sys.executable).parent / "tracegate"), "mask", "--detectors", "all",
                 "-o", str(out), str(path)],
            ),
        ]  # fmt: skip
        rows = []
        for name, argv in commands:
            started = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            rows.append((name, time.perf_counter() - started))
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,20", help="body sizes in MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=5, help="best of N timings")
    parser.add_argument("--cli-mb", type=float, default=60, help="file size for the CLI rows")
    args = parser.parse_args()
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        body = body_of(size)
        mb = len(body) / 1_000_000
        floor = best_of(args.repeat, lambda b=body: round_trip(b))
        fast = masker("hyperscan")
        slow = masker("re")
        report = MaskReport()
        fast.mask_body(body, "json", report)
        t_fast = best_of(
            args.repeat, lambda b=body, m=fast: fresh(m).mask_body(b, "json", MaskReport())
        )
        t_slow = best_of(1, lambda b=body, m=slow: m.mask_body(b, "json", MaskReport()))
        bare = masker("hyperscan", NO_DETECTORS)
        bare.mask_body(body, "json", MaskReport())
        t_bare = best_of(
            args.repeat, lambda b=body, m=bare: fresh(m).mask_body(b, "json", MaskReport())
        )
        memory = (
            peak_rss_ratio(body, ROUND_TRIP),
            peak_rss_ratio(body, MASKING, BUILD + WARM_UP),
            peak_rss_ratio(body, BUILD + MASKING),
        )
        rows.append((mb, floor, t_fast, t_slow, t_bare, memory, sum(report.counts.values())))
    print(f"\nbest of {args.repeat}; realistic trace text with a few planted values; 1 core")
    print(
        f"{'body MB':>8}{'JSON round trip MB/s':>22}{'tracegate MB/s':>16}{'ratio':>7}"
        f"{'re-only MB/s':>14}{'no detector: ratio':>20}{'peak RSS x body: round trip':>29}"
        f"{'tracegate':>11}{'(cold)':>8}{'findings':>10}"
    )
    for mb, floor, t_fast, t_slow, t_bare, (rss_floor, rss, cold), found in rows:
        print(
            f"{mb:>8.1f}{mb / floor:>22.0f}{mb / t_fast:>16.0f}{floor / t_fast:>7.0%}"
            f"{mb / t_slow:>14.1f}{floor / t_bare:>20.0%}{rss_floor:>29.1f}{rss:>11.1f}"
            f"{cold:>8.1f}{found:>10}"
        )
    if args.cli_mb:
        rows = cli_rows(args.cli_mb)
        base = rows[0][1]
        print(f"\nwhole process on one {args.cli_mb:.0f} MB export (JSON)")
        print(f"{'command':<36}{'seconds':>9}{'MB/s':>8}{'vs round trip':>15}")
        for name, seconds in rows:
            print(f"{name:<36}{seconds:>9.2f}{args.cli_mb / seconds:>8.1f}{base / seconds:>15.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
