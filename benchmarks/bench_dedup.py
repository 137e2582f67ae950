"""Near-duplicate removal: clips/s and recall of planted duplicates, exact (flat) vs IVF index.

Synthetic CLIP-like embeddings (768-d, clustered: cosine ~0.4 inside a cluster) with 5% planted
near copies (cosine ~0.98). The baseline is the exact flat index on the same inputs; the IVF
index must keep recall >= 0.99 of the planted pairs. The exact search costs N^2 D, so at 1M
clips it is timed on a 100k-query sample and extrapolated (said so in the output).

    .venv/bin/python -m benchmarks.bench_dedup [--sizes 100000,1000000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

DIM = 768
DUP_SHARE = 0.05


def corpus(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from svdcli.curate.scorers.near_duplicates import normalise

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((max(20, n // 500), DIM)).astype(np.float32)
    x = centers[rng.integers(0, len(centers), n)]
    x += 1.2 * rng.standard_normal((n, DIM), dtype=np.float32)
    x = normalise(x)
    k = int(n * DUP_SHARE)
    src, dst = np.split(rng.choice(n, 2 * k, replace=False), 2)
    x[dst] = normalise(x[src] + 0.2 * normalise(rng.standard_normal((k, DIM), dtype=np.float32)))
    return x, src, dst


def recall(dup: list, src: np.ndarray, dst: np.ndarray) -> float:
    dropped = np.array([d is not None for d in dup])
    return float(np.mean(dropped[src] | dropped[dst]))


def run(n: int, exact_full: bool) -> None:
    from svdcli.curate.scorers.near_duplicates import DuplicateConfig, build_index, find_duplicates

    x, src, dst = corpus(n)
    ids = [f"c{i:08d}" for i in range(n)]
    priority = np.zeros(n)
    t = time.perf_counter()
    dup = find_duplicates(ids, x, priority, DuplicateConfig(index="ivf"))[0]
    ivf = time.perf_counter() - t
    rec_ivf = recall(dup, src, dst)
    if exact_full:
        t = time.perf_counter()
        dup = find_duplicates(ids, x, priority, DuplicateConfig(index="exact"))[0]
        exact = time.perf_counter() - t
        note = f"recall {recall(dup, src, dst):.4f}"
    else:  # time 10% of the queries against the full flat index; the cost is linear in queries
        index = build_index(x, "exact")
        q = x[:n // 10]
        t = time.perf_counter()
        for start in range(0, len(q), 4096):
            index.range_search(q[start:start + 4096], 0.95)
        exact = (time.perf_counter() - t) * 10
        note = "extrapolated from 10% of the queries"
    print(f"{n:>9,} clips: exact {exact:8.1f} s ({n / exact:>9,.0f} clips/s; {note}) | "
          f"IVF {ivf:7.1f} s ({n / ivf:>9,.0f} clips/s; recall {rec_ivf:.4f}) | "
          f"IVF speed-up x{exact / ivf:.1f}", flush=True)


def run_ray(n: int) -> None:
    """The same exact search on a local Ray instance with 2 CPUs (index shared once, query
    blocks as tasks) vs in this process (faiss's own threads on the same 2 cores)."""
    import os

    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    from svdcli.curate.executors.ray import RayExecutor
    from svdcli.curate.scorers.near_duplicates import neighbour_lists

    x, _, _ = corpus(n)
    t = time.perf_counter()
    here = neighbour_lists(x, 0.95, "exact")
    local = time.perf_counter() - t
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        t = time.perf_counter()
        there = neighbour_lists(x, 0.95, "exact", executor=RayExecutor(address=None))
        on_ray = time.perf_counter() - t
    finally:
        ray.shutdown()
    same = all(np.array_equal(a, b) for a, b in zip(here, there))
    print(f"{n:>9,} clips exact on Ray (2 CPUs): {on_ray:6.1f} s vs in process {local:6.1f} s | "
          f"Ray / local x{on_ray / local:.2f}; same neighbours: {same}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="20000,100000,1000000")
    parser.add_argument("--ray-size", type=int, default=20000, help="clips for the Ray comparison (0: skip)")
    args = parser.parse_args(argv if argv is not None else [])
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, exact_full=n <= 20_000)
    if args.ray_size:
        run_ray(args.ray_size)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
