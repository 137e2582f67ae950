"""Cut detection speed: our single-pass cascade against bare decoding and three PySceneDetect passes.

On one 60 s 1280x720 H.264 clip (synthetic pans, cuts, dissolves; made once under bench-out/):
  - bare threaded PyAV decode of every frame (the floor: nothing can be faster),
  - three PySceneDetect SceneManager + ContentDetector passes (native, 15, 8 fps) as a user
    would script them (`open_video` defaults, `frame_skip` for the lower rates),
  - `svd curate cuts` with one worker (`run_cuts`, manifest written), default cascade,
  - `svd curate cuts --detector transnetv2`: frames/s on the CPU, and on the GPU when there is one.
Targets: cascade <= 1.3x bare decode, >= 2x faster than the three passes. Then throughput with
--workers 1 and 2 over several copies of the clip. Each timing is the best of `REPEATS`.

Whole commands (start-up included), the cost a user sees: `svd curate cuts DIR --workers 1` over
four copies of a 60 s 1280x720 25 fps clip of panning textures with a hard cut every 5 s,
against a bare threaded PyAV decode of the same four files in a fresh interpreter; the two
alternate, 3 rounds, medians of wall and CPU time (target: <= 1.3x).
Accuracy on labelled footage: bench_cuts_accuracy.py.
"""
from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path("bench-out/cuts")  # the generated clip is kept here between runs
SECONDS, FPS, SIZE = 60, 30, (1280, 720)
REPEATS = 3
COPIES = 4


def make_clip(path: Path) -> Path:
    """60 s of 720p30: 3 s panning shots joined alternately by cuts and 0.5 s dissolves."""
    import av
    import cv2

    from svdcli.video.synth import Shot, render_shot

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng, total, tmp = np.random.default_rng(0), SECONDS * FPS, path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        written, tail, i = 0, [], 0

        def emit(frames):
            nonlocal written
            for f in frames[:total - written]:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
                written += 1

        while written < total:
            # render at half size and upscale: softer, camera-like pictures, and 4x faster
            shot = render_shot(Shot(90, seed=i, speed=tuple(rng.uniform(-1.0, 1.0, 2))), SIZE[1] // 2, SIZE[0] // 2)
            frames = [cv2.resize(f, SIZE, interpolation=cv2.INTER_CUBIC) for f in shot]
            if tail and i % 2:  # a 15-frame dissolve from the held-back tail
                w = np.linspace(0, 1, 17)[1:-1]
                frames[:15] = [(a * (1 - x) + b * x).astype(np.uint8) for a, b, x in zip(tail, frames[:15], w)]
            else:  # a cut: show the tail, then the new shot
                emit(tail)
            emit(frames[:-15])
            tail, i = frames[-15:], i + 1
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


def make_cut_clip(path: Path, seconds: int = 60, fps: int = 25) -> Path:
    """60 s of 1280x720 at 25 fps: panning textured shots, a hard cut every 5 s (12 shots)."""
    import av
    import cv2

    from svdcli.video.synth import Shot, render_shot

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng, tmp = np.random.default_rng(0), path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(seconds // 5):
            shot = render_shot(Shot(5 * fps, seed=i, speed=tuple(rng.uniform(-1.0, 1.0, 2))), SIZE[1] // 2, SIZE[0] // 2)
            for f in shot:
                frame = av.VideoFrame.from_ndarray(cv2.resize(f, SIZE, interpolation=cv2.INTER_CUBIC), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(path)
    return path


BARE_DECODE = """
import sys, av
for p in sys.argv[1:]:
    with av.open(p) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for _ in c.decode(s):
            pass
"""


def timed_command(args: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one command run to completion (its children's CPU time)."""
    import subprocess

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def whole_command_cost(rounds: int = 3) -> tuple[float, float]:
    """`svd curate cuts` over 4 copies of the 25 fps cut clip against a bare threaded decode of
    them, both as whole commands, alternating; prints medians, returns (wall ratio, CPU ratio)."""
    import statistics
    import sys

    clip = make_cut_clip(OUT / "cuts25fps720p60s.mp4")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "videos"
        folder.mkdir()
        copies = [folder / f"copy{i}.mp4" for i in range(COPIES)]
        for c in copies:
            shutil.copyfile(clip, c)
        env_python = sys.executable
        bare, ours = [], []
        for r in range(rounds):
            bare.append(timed_command([env_python, "-c", BARE_DECODE, *map(str, copies)]))
            ours.append(timed_command([env_python, "-m", "svdcli", "curate", "cuts", str(folder), "--out",
                                       str(Path(tmp) / f"clips{r}.parquet"), "--workers", "1", "--no-progress"]))
    med = lambda runs, i: statistics.median(x[i] for x in runs)  # noqa: E731
    print(f"whole commands, {COPIES} x 60 s 1280x720 25 fps (cut every 5 s), median of {rounds}:")
    print(f"{'':32s} {'wall s':>7s} {'cpu s':>7s}")
    print(f"{'bare threaded PyAV decode':32s} {med(bare, 0):7.2f} {med(bare, 1):7.2f}")
    print(f"{'svd curate cuts --workers 1':32s} {med(ours, 0):7.2f} {med(ours, 1):7.2f}")
    ratios = (statistics.median(o[0] / b[0] for o, b in zip(ours, bare)),
              statistics.median(o[1] / b[1] for o, b in zip(ours, bare)))
    print(f"cuts / bare decode (median of per-round ratios): wall {ratios[0]:.2f}x  cpu {ratios[1]:.2f}x  "
          f"(target <= 1.3x)")
    return ratios


def _cpu() -> float:
    """CPU seconds of this process and its finished children (decoder threads included)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def best(fn, repeats: int = REPEATS) -> tuple[float, float, object]:
    """Best wall time, best CPU time and the result of `repeats` calls of `fn`.

    CPU time is reported too because the dev machine is shared: wall time there measures the
    neighbours as much as the code, CPU time does not.
    """
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        c0, t0 = _cpu(), time.perf_counter()
        result = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu() - c0)
    return min(walls), min(cpus), result


def bare_decode(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def three_scenedetect_passes(path: Path) -> list[int]:
    from scenedetect import ContentDetector, SceneManager, open_video

    found = []
    for frame_skip, threshold in ((0, 27.0), (1, 22.0), (3, 17.0)):  # ~30, 15, 7.5 fps
        video = open_video(str(path))
        manager = SceneManager()
        manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=15))
        manager.detect_scenes(video, frame_skip=frame_skip)
        found.append(len(manager.get_scene_list()) - 1)
    return found


def ours(paths: list[Path], workers: int = 1, detector: str = "cascade", device: str = "cpu") -> tuple[int, int]:
    from svdcli.curate.stages.cuts import CutsConfig, run_cuts

    with tempfile.TemporaryDirectory() as tmp:
        summary = run_cuts(paths, Path(tmp) / "clips.parquet", CutsConfig(detector=detector), workers=workers,
                           progress=False, device=device)
    return summary.clips, summary.errors


def transnet_rates(clip: Path, frames: int) -> None:
    """TransNetV2 inside the stage (decode included), CPU and GPU; the decode's share subtracted."""
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    w_bare, _, _ = best(lambda: bare_decode(clip), repeats=1)
    for device in devices:
        wall, cpu, _ = best(lambda: ours([clip], detector="transnetv2", device=device), repeats=1)
        print(f"{'--detector transnetv2 (' + device + ')':32s} {wall:7.2f} {cpu:7.2f}  "
              f"{frames / wall:6.1f} frames/s with decode, {frames / max(wall - w_bare, 1e-9):6.1f} network only")
    if len(devices) == 1:
        print("--detector transnetv2 (cuda): not run, no GPU here")


def main() -> None:
    clip = make_clip(OUT / "clip720p60s.mp4")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    whole_command_cost()
    w_bare, c_bare, frames = best(lambda: bare_decode(clip))
    w_ours, c_ours, (clips, errors) = best(lambda: ours([clip]))
    w_psd, c_psd, cuts = best(lambda: three_scenedetect_passes(clip), repeats=1)
    print(f"clip: {clip} ({frames} frames, {SIZE[0]}x{SIZE[1]}, {SECONDS} s)")
    print(f"{'':32s} {'wall s':>7s} {'cpu s':>7s}")
    print(f"{'bare threaded PyAV decode':32s} {w_bare:7.2f} {c_bare:7.2f}")
    print(f"{'svd curate cuts, 1 worker':32s} {w_ours:7.2f} {c_ours:7.2f}  ({clips} clips, {errors} errors)")
    print(f"{'3 PySceneDetect passes':32s} {w_psd:7.2f} {c_psd:7.2f}  (cuts per pass {cuts})")
    print(f"cuts / bare decode:   wall {w_ours / w_bare:.2f}x  cpu {c_ours / c_bare:.2f}x  (target <= 1.3x)")
    print(f"3 passes / cuts:      wall {w_psd / w_ours:.2f}x  cpu {c_psd / c_ours:.2f}x  (target >= 2x)")
    transnet_rates(clip, frames)

    with tempfile.TemporaryDirectory() as tmp:
        copies = [Path(tmp) / f"copy{i}.mp4" for i in range(COPIES)]
        for c in copies:
            shutil.copyfile(clip, c)
        for workers in (1, 2):
            wall, _, _ = best(lambda: ours(copies, workers), repeats=1)
            print(f"--workers {workers}: {COPIES} videos in {wall:6.2f} s = "
                  f"{COPIES * SECONDS / wall:5.1f} video-seconds/s")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
