"""CLI start-up: wall seconds of `python -m svdcli --help` and of `svd <command> --help`, against
a bare interpreter start (the baseline), median of several runs. Target: `svd --help` under 1 s.

    .venv/bin/python -m benchmarks.bench_startup
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = 7


def _median_seconds(args: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    bare = _median_seconds(["-c", "pass"])
    print(f"bare python start: {bare:.3f} s (baseline)")
    for command in ([], ["sample"], ["train"], ["curate"]):
        label = " ".join(["svd", *command, "--help"])
        s = _median_seconds(["-m", "svdcli", *command, "--help"])
        print(f"{label}: {s:.3f} s (x{s / bare:.1f} the bare start; target < 1 s: "
              f"{'met' if s < 1.0 else 'NOT met'})", flush=True)


if __name__ == "__main__":
    main()
