"""Curation on Ray vs the local process pool, same cores: cuts, motion, text (DBNet, an actor
pool) and pack over a synthetic corpus.

Baseline: the local executor with 2 worker processes. Ray: a local Ray instance with 2 CPUs
(`ray.init(num_cpus=2)`), the same stages and tasks. Target: Ray wall <= 1.15x local. Also
reported: Ray's scheduling overhead per task (no-op tasks) and an actor's start-up (what a
model stage pays once per worker before its model loads).

    .venv/bin/python -m benchmarks.bench_ray
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

VIDEOS = 12


def corpus(folder: Path) -> list[Path]:
    from svdcli.video.synth import Shot, write_video

    paths = []
    for i in range(VIDEOS):
        path = folder / f"v{i:02d}.mp4"
        write_video(path, [Shot(48, seed=i), Shot(48, seed=i + 50, speed=(2.0, 0.0)), Shot(48, seed=i + 99)],
                    size=(320, 180), fps=24.0)
        paths.append(path)
    return paths


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    from svdcli.curate.executors.ray import RayExecutor
    from svdcli.curate.stages.cuts import CutsConfig, run_cuts
    from svdcli.curate.stages.motion import run_motion
    from svdcli.curate.stages.text import run_text
    from svdcli.shards.pack import PackConfig, run_pack

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = corpus(tmp)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            ray_ex = RayExecutor(address=None)
            rows = {}
            for name, ex in (("local", None), ("ray", ray_ex)):
                out = tmp / f"cuts-{name}.parquet"
                rows[f"cuts {name}"] = timed(lambda: run_cuts(videos, out, CutsConfig(), workers=2, executor=ex))
                rows[f"motion {name}"] = timed(lambda: run_motion(out, tmp / f"motion-{name}.parquet", workers=2,
                                                                  executor=ex))
                rows[f"text {name}"] = timed(lambda: run_text(out, tmp / f"text-{name}.parquet", workers=2,
                                                              executor=ex, detector="dbnet"))
                pack = PackConfig(size=(128, 192), frames=14, min_frames=4, shard_size=4)
                rows[f"pack {name}"] = timed(lambda: run_pack(out, tmp / f"shards-{name}", pack, workers=2,
                                                              all_ok=True, progress=False, executor=ex))
            for stage in ("cuts", "motion", "text", "pack"):
                local, on_ray = rows[f"{stage} local"], rows[f"{stage} ray"]
                print(f"{stage:<7} {VIDEOS} videos: local pool {local:6.2f} s | Ray {on_ray:6.2f} s | "
                      f"Ray / local x{on_ray / local:.2f} (target <= 1.15)", flush=True)
            noop = ray.remote(lambda: None)
            ray.get([noop.remote() for _ in range(50)])  # workers warm
            n = 500
            per = timed(lambda: ray.get([noop.remote() for _ in range(n)])) / n
            print(f"scheduling overhead: {per * 1e3:.2f} ms per task ({n} no-op tasks, 2 CPUs)")

            class Empty:
                def ping(self):
                    return 1

            actor = ray.remote(Empty)
            start = timed(lambda: ray.get([a.ping.remote() for a in [actor.remote() for _ in range(2)]]))
            print(f"actor start-up: {start:.2f} s for 2 actors (before any model loads)")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
