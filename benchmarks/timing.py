"""Timing helpers shared by the benchmarks: medians of repeated runs, A against B in turn."""
from __future__ import annotations

import statistics
import time


def median_seconds(fn, repeats: int = 3, warmup: bool = False) -> float:
    """Median wall seconds of `repeats` calls of `fn` (after one uncounted call with `warmup`)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(a, b, repeats: int) -> tuple[float, float, float]:
    """a and b called in turn `repeats` times: their median seconds and the median of the
    pairwise ratios a / b (a shared machine drifts; each pair sees the same drift)."""
    ta, tb = [], []
    for _ in range(repeats):
        ta.append(median_seconds(a, 1))
        tb.append(median_seconds(b, 1))
    return statistics.median(ta), statistics.median(tb), statistics.median(x / y for x, y in zip(ta, tb))
