"""Masking speed and memory: tracegate's detectors against a plain JSON round trip.

    .venv/bin/python scripts/bench/masking.py [--sizes 1,20] [--repeat 3]

For each size, one trace body of realistic prose in trace shapes (OTLP spans, Langfuse-style
traces, chat logs) is generated, then timed side by side: json.loads + json.dumps (the floor:
any masking must at least parse and serialise), and tracegate's Masker with every detector on
(hyperscan prefilter, then the `re` fallback). Peak memory is measured in a fresh child process
per size: the growth of its maximum RSS while masking, as a multiple of the body size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "addons"))

from tracegate.config import ScopeConfig  # noqa: E402
from tracegate.demo.corpus import realistic_text_documents  # noqa: E402
from tracegate.masking import Masker, MaskReport  # noqa: E402

SCOPE = ScopeConfig(operations=["GetObject"], prefixes=[""])  # default: every detector on


def body_of(megabytes: float) -> bytes:
    documents = realistic_text_documents(int(megabytes * 1_000_000))
    return json.dumps({"traces": documents}, ensure_ascii=False).encode()


def best_of(repeat: int, func) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def masker(engine: str) -> Masker:
    m = Masker(SCOPE, b"bench-key")
    if engine == "re":
        from tracegate.detectors.scanner import Scanner

        m._text.scanner = Scanner(m._text.scanner.detectors, use_hyperscan=False)
    return m


ROUND_TRIP = "import json\nout = json.dumps(json.loads(body), ensure_ascii=False).encode()\n"
MASKING = (
    "from tracegate.config import ScopeConfig\n"
    "from tracegate.masking import Masker, MaskReport\n"
    "m = Masker(ScopeConfig(operations=['GetObject'], prefixes=['']), b'k')\n"
    "out = m.mask_body(body, 'json', MaskReport())\n"
)


def peak_rss_ratio(body: bytes, work: str = MASKING) -> float:
    """Run `work` once in a fresh process; growth of its peak RSS / body size."""
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        handle.write(body)
        handle.flush()
        code = (
            "import resource, sys\n"
            f"sys.path.insert(0, {str(REPO / 'addons')!r})\n"
            "import tracegate.masking\n"  # imports before the baseline
            f"body = open({handle.name!r}, 'rb').read()\n"
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,20", help="body sizes in MB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings")
    args = parser.parse_args()
    rows = []
    for size in (float(s) for s in args.sizes.split(",")):
        body = body_of(size)
        mb = len(body) / 1_000_000
        floor = best_of(args.repeat, lambda b=body: json.dumps(json.loads(b)).encode())
        fast = masker("hyperscan")
        slow = masker("re")
        report = MaskReport()
        fast.mask_body(body, "json", report)
        t_fast = best_of(args.repeat, lambda b=body, m=fast: m.mask_body(b, "json", MaskReport()))
        t_slow = best_of(1, lambda b=body, m=slow: m.mask_body(b, "json", MaskReport()))
        memory = (peak_rss_ratio(body, ROUND_TRIP), peak_rss_ratio(body))
        rows.append((mb, floor, t_fast, t_slow, memory, sum(report.counts.values())))
    print(f"\nbest of {args.repeat}; realistic trace text with a few planted values; 1 core")
    print(
        f"{'body MB':>8}{'JSON round trip MB/s':>22}{'tracegate MB/s':>16}{'ratio':>7}"
        f"{'re-only MB/s':>14}{'peak RSS x body: round trip':>29}{'tracegate':>11}"
        f"{'findings':>10}"
    )
    for mb, floor, t_fast, t_slow, (rss_floor, rss), found in rows:
        print(
            f"{mb:>8.1f}{mb / floor:>22.0f}{mb / t_fast:>16.0f}{floor / t_fast:>7.0%}"
            f"{mb / t_slow:>14.1f}{rss_floor:>29.1f}{rss:>11.1f}{found:>10}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
