"""What the fault handling costs on the paths that run per frame, per video and per command.

1. decode hot path: `decode_once` over a 10 s 640x360 clip with its per-frame timestamp check
   (`TimestampCheck.see`: joined files, holes) against the same decode with the check replaced
   by the bare comparison it grew from (`t > last`): the baseline, interleaved, median of runs.
2. a stage's bookkeeping: `run_stage` over 200 trivial tasks (lock file, merge claim, part
   files) per task, against calling the stage's `process` on them directly.
3. the whole `svd curate cuts` command on one short clip (start-up, scan, write checks, locks,
   decode, manifest), against the same command of a BASELINE checkout of the code when one is
   given (`python -m benchmarks.bench_faults /path/to/baseline`, e.g. made with
   `git archive <commit> | tar -x -C /path/to/baseline`), interleaved A B A B, median of runs.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = 7


def _clip(folder: Path, seconds: int, size: tuple[int, int]) -> Path:
    from svdcli.video.synth import Shot, write_video

    path = folder / f"clip_{seconds}s_{size[0]}x{size[1]}.mp4"
    write_video(path, [Shot(24 * seconds, seed=0, speed=(0.5, 0.0))], size=size, fps=24)
    return path


def decode_overhead(clip: Path) -> None:
    from svdcli.video import decode

    checked = decode.TimestampCheck.see
    bare = lambda self, index, last, t: last is None or t > last  # noqa: E731 - the comparison it replaced
    times: dict[str, list[float]] = {"check": [], "bare": []}
    for _ in range(RUNS):
        for name, see in (("check", checked), ("bare", bare)):
            decode.TimestampCheck.see = see
            t0 = time.perf_counter()
            result = decode.decode_once(clip, [], threads=1)
            times[name].append(time.perf_counter() - t0)
    decode.TimestampCheck.see = checked
    a, b = statistics.median(times["check"]), statistics.median(times["bare"])
    ratios = sorted(x / y for x, y in zip(times["check"], times["bare"]))
    print(f"decode_once {result.frames} frames: with the timestamp check {a * 1e3:.1f} ms, bare {b * 1e3:.1f} ms "
          f"(baseline); ratio {a / b:.3f} (pairwise median {statistics.median(ratios):.3f}, "
          f"min {ratios[0]:.3f}, max {ratios[-1]:.3f}); per frame {(a - b) / result.frames * 1e6:+.2f} us")


def stage_bookkeeping(folder: Path) -> None:
    import svdcli.curate  # noqa: F401 - the manifest columns
    from svdcli.curate.parts import clean_parts
    from svdcli.curate.runner import run_stage
    from svdcli.curate.stage import Stage, Task

    class Trivial(Stage):
        name = "cuts"
        columns = ("clip_id", "video_path", "status")

        def process(self, payload):
            return [{"clip_id": payload, "video_path": payload, "status": "ok"}]

    tasks = [Task(f"v{i}", f"v{i}") for i in range(200)]
    stage, runs, direct = Trivial(), [], []
    for k in range(RUNS):
        out = folder / f"m{k}.parquet"
        t0 = time.perf_counter()
        run_stage(stage, tasks, out, flush_rows=512, flush_seconds=5.0)
        clean_parts(out, stage)
        runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        [stage.process(t.payload) for t in tasks]
        direct.append(time.perf_counter() - t0)
    print(f"run_stage over {len(tasks)} trivial tasks (locks, claim, parts, clean-up): "
          f"{statistics.median(runs) * 1e3:.1f} ms, {statistics.median(runs) / len(tasks) * 1e6:.0f} us per task "
          f"(the tasks themselves: {statistics.median(direct) * 1e3:.2f} ms)")


def whole_command(clip: Path, folder: Path, baseline: Path | None) -> None:
    trees = {"this": REPO, **({"baseline": baseline} if baseline else {})}
    times: dict[str, list[float]] = {name: [] for name in trees}
    for k in range(RUNS + 1):  # the first round warms the file cache, not counted
        for name, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
            out = folder / f"{name}{k}.parquet"
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "svdcli", "curate", "cuts", str(clip), "--out", str(out),
                            "--no-progress"], env=env, check=True, capture_output=True)
            if k:
                times[name].append(time.perf_counter() - t0)
    this = statistics.median(times["this"])
    line = f"`svd curate cuts` on a {clip.name}, whole command: {this:.2f} s"
    if baseline:
        base = statistics.median(times["baseline"])
        ratios = sorted(a / b for a, b in zip(times["this"], times["baseline"]))
        line += (f"; baseline checkout {base:.2f} s; ratio {this / base:.3f} (pairwise median "
                 f"{statistics.median(ratios):.3f}, min {ratios[0]:.3f}, max {ratios[-1]:.3f})")
    print(line)


def main(baseline: str | None = None) -> None:
    baseline = baseline or (sys.argv[1] if len(sys.argv) > 1 and __name__ == "__main__" else None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        decode_overhead(_clip(folder, 10, (640, 360)))
        stage_bookkeeping(folder)
        whole_command(_clip(folder, 2, (160, 96)), folder, Path(baseline) if baseline else None)


if __name__ == "__main__":
    main()
