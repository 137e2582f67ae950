"""Small statistics on score lists: ranks, Spearman's rho, and distances between two samples.

Spearman's rho (Spearman 1904) is Pearson's correlation of the ranks, ties given their average
rank. The distances compare a score's distribution over generated videos with the training
manifest's: the Wasserstein-1 distance (the mean absolute difference of the quantile functions,
in the score's own units) and the Kolmogorov-Smirnov statistic (the largest gap between the
empirical CDFs, 0..1, unit-free).
"""
from __future__ import annotations

import numpy as np


def ranks(values) -> np.ndarray:
    """1-based ranks, tied values sharing their average rank."""
    x = np.asarray(values, np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    r = np.empty(len(x))
    start = 0
    for end in range(1, len(x) + 1):
        if end == len(x) or sorted_x[end] != sorted_x[start]:
            r[order[start:end]] = (start + end + 1) / 2.0   # mean of ranks start+1 .. end
            start = end
    return r


def spearman(a, b) -> float | None:
    """Spearman's rho of two paired lists; None when either is constant or shorter than 3."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired lists of different lengths: {len(a)} and {len(b)}")
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def wasserstein1(a, b) -> float:
    """W1 between two empirical distributions: integral of |F_a^-1(q) - F_b^-1(q)| dq."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if not len(a) or not len(b):
        raise ValueError("both samples need at least one value")
    grid = np.union1d(np.arange(len(a) + 1) / len(a), np.arange(len(b) + 1) / len(b))
    mid = (grid[:-1] + grid[1:]) / 2                      # quantile levels inside each piece
    qa = a[np.minimum((mid * len(a)).astype(int), len(a) - 1)]
    qb = b[np.minimum((mid * len(b)).astype(int), len(b) - 1)]
    return float((np.abs(qa - qb) * np.diff(grid)).sum())


def ks_statistic(a, b) -> float:
    """sup_x |F_a(x) - F_b(x)| of the two empirical CDFs."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    x = np.concatenate([a, b])
    fa = np.searchsorted(a, x, side="right") / len(a)
    fb = np.searchsorted(b, x, side="right") / len(b)
    return float(np.abs(fa - fb).max())
