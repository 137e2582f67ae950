"""Motion stage throughput vs a plain OpenCV loop, and the CPU chain cuts + motion vs a bare decode.

Input: a 60 s 1280x720 30 fps H.264 clip of 12 five-second shots (static, slow and fast pans,
hard cuts), rendered once with svdcli.video.synth and cached under bench-out/.

1. `svd curate motion` (run_motion over the 12 clips) vs the straightforward loop: VideoCapture
   reads every frame, cvtColor to gray, resize to the same analysis size, Farneback on the same
   2 fps pairs. A second baseline converts only the frames it scores. Reported as clip seconds
   per CPU second (process CPU time, all threads) and wall time; the target is >= 2x.
2. cuts + motion (the CPU stages a recipe runs first) vs a bare PyAV decode of every frame
   (no conversion); target <= 2x the bare decode's wall time. `svd curate run` scores motion
   inside the cuts decode (svdcli.curate.stages.cuts_motion); the two stages run one after the other
   (`svd curate cuts` then `svd curate motion`) are shown too.

Motion is a CPU stage (OpenCV Farneback), so there is no GPU variant.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "bench-out"
FPS, SIZE, SHOT_FRAMES = 30, (1280, 720), 150
SPEEDS = [0.0, 1.0, 6.0, 0.0, 3.0, 12.0, 0.5, 0.0, 2.0, 8.0, 0.0, 4.0]  # px/frame, one per shot


def clip_60s_720p() -> Path:
    """Render the benchmark clip once, shot by shot straight into the encoder (bounded memory)."""
    import av

    from svdcli.video.synth import Shot, render_shot

    path = OUT / "motion_60s_720p.mp4"
    if path.exists():
        return path
    OUT.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for i, speed in enumerate(SPEEDS):
            for frame in render_shot(Shot(SHOT_FRAMES, seed=i, speed=(speed, speed / 4)), SIZE[1], SIZE[0]):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    tmp.rename(path)
    return path


def manifest_for(video: Path, folder: Path) -> Path:
    """The 12 known shots as a cuts-style manifest."""
    from svdcli.manifest.io import table_from_rows, write_manifest

    rows = [{"clip_id": f"s{i}", "video_path": str(video), "start_time": i * SHOT_FRAMES / FPS,
             "end_time": (i + 1) * SHOT_FRAMES / FPS, "start_frame": i * SHOT_FRAMES,
             "end_frame": (i + 1) * SHOT_FRAMES, "num_frames": SHOT_FRAMES, "fps": float(FPS),
             "width": SIZE[0], "height": SIZE[1], "status": "ok"} for i in range(len(SPEEDS))]
    columns = list(rows[0])
    return write_manifest(table_from_rows(rows, columns), folder / "clips.parquet")


def timed(fn):
    """(result, wall seconds, process CPU seconds over all threads)."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w, time.process_time() - c


def opencv_loop(video: Path, convert_all: bool) -> list[float]:
    """The straightforward baseline: read every frame, gray, same pairs and analysis size."""
    import cv2

    from svdcli.curate.stages.motion import PAIR_GAP, MotionConfig, flow_size, pair_flow_magnitude, sample_pairs

    cfg = MotionConfig()
    size = flow_size(*SIZE)
    wanted = {}  # frame index -> (shot, pair, slot)
    gap = 0.0
    for s in range(len(SPEEDS)):
        for p, pair in enumerate(sample_pairs(s * SHOT_FRAMES / FPS, (s + 1) * SHOT_FRAMES / FPS, FPS, cfg)):
            gap = pair[1] - pair[0]
            for slot, t in enumerate(pair):
                wanted[int(t * FPS)] = (s, p, slot)
    frames: dict[tuple[int, int], list] = {}
    cap = cv2.VideoCapture(str(video))
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if convert_all or index in wanted else None
        if index in wanted:
            s, p, slot = wanted[index]
            frames.setdefault((s, p), [None, None])[slot] = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        index += 1
    cap.release()
    scores = []
    for s in range(len(SPEEDS)):
        values = [pair_flow_magnitude(a, b, cfg) for (shot, _), (a, b) in sorted(frames.items()) if shot == s]
        scores.append(float(np.median(values)) * PAIR_GAP / gap)
    return scores


def bare_decode(video: Path) -> int:
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return sum(1 for _ in container.decode(stream))


def run_ours(manifest: Path, out: Path) -> list[float]:
    from svdcli.curate.stages.motion import run_motion
    from svdcli.manifest.io import read_manifest

    run_motion(manifest, out, progress=False)
    return read_manifest(out).column("motion_score").to_pylist()


def phases(video: Path) -> None:
    """Where the stage's CPU goes: the sparse read (1 decoder thread vs automatic) and Farneback."""
    from svdcli.curate.stages.motion import MotionConfig, flow_size, pair_flow_magnitude, sample_pairs
    from svdcli.video.sparse import read_gray_at

    times = sorted({t for s in range(len(SPEEDS)) for pair in sample_pairs(
        s * SHOT_FRAMES / FPS, (s + 1) * SHOT_FRAMES / FPS, FPS, MotionConfig()) for t in pair})
    for threads in (1, 0):
        (frames, _), wall, cpu = timed(lambda: read_gray_at(video, times, flow_size(*SIZE), threads))
        print(f"  sparse read + gray, {len(times)} frames, threads={threads or 'auto'}: {wall:.2f} s wall, {cpu:.2f} s cpu")
    pairs = frames.reshape(-1, 2, *frames.shape[1:])  # (N, h, w) -> (P, 2, h, w): times come in pairs
    _, wall, cpu = timed(lambda: [pair_flow_magnitude(a, b) for a, b in pairs])
    print(f"  Farneback on {len(pairs)} pairs: {wall:.2f} s wall, {cpu:.2f} s cpu")


def run_chain(video: Path, folder: Path) -> list[float]:
    """cuts then motion, two stages: two decodes."""
    from svdcli.curate.stages.cuts import cuts_config, run_cuts
    from svdcli.curate.stages.motion import run_motion
    from svdcli.manifest.io import read_manifest

    clips = folder / "chain_cuts.parquet"
    run_cuts([video], clips, cuts_config(), progress=False)
    run_motion(clips, folder / "chain_motion.parquet", progress=False)
    return read_manifest(folder / "chain_motion.parquet").column("motion_score").to_pylist()


def run_one_pass(video: Path, folder: Path) -> list[float]:
    """cuts + motion as `svd curate run` does it: one decode."""
    from svdcli.curate.stages.cuts import cuts_config
    from svdcli.curate.stages.cuts_motion import run_cuts_motion, write_motion_manifest
    from svdcli.curate.stages.motion import MotionConfig
    from svdcli.manifest.io import read_manifest

    clips, scored = folder / "pass_cuts.parquet", folder / "pass_motion.parquet"
    _, rows = run_cuts_motion([video], clips, cuts_config(), MotionConfig(), progress=False)
    write_motion_manifest(clips, scored, rows, MotionConfig())
    return read_manifest(scored).column("motion_score").to_pylist()


def main(rounds: int = 3) -> None:
    """Every measurement `rounds` times, interleaved (a noisy neighbour hits all sides alike);
    medians are reported, with the per-round range of the two target ratios."""
    import av  # noqa: F401
    import cv2

    import svdcli.curate.stages.motion  # noqa: F401  libraries of both sides load before any timing

    cv2.setNumThreads(1)  # the stage runs Farneback on one thread per worker; same for the baseline
    video = clip_60s_720p()
    seconds = len(SPEEDS) * SHOT_FRAMES / FPS
    runs: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        manifest = manifest_for(video, folder)
        measures = {"ours": lambda: run_ours(manifest, folder / "motion.parquet"),
                    "base": lambda: opencv_loop(video, convert_all=True),
                    "lean": lambda: opencv_loop(video, convert_all=False),
                    "decode": lambda: bare_decode(video),
                    "chain": lambda: run_chain(video, folder),
                    "one": lambda: run_one_pass(video, folder)}
        results = {}
        for _ in range(rounds):
            for name, fn in measures.items():
                results[name], wall, cpu = timed(fn)
                runs.setdefault(name, []).append((wall, cpu))
    med = {name: tuple(float(np.median(x)) for x in zip(*values)) for name, values in runs.items()}
    (ours_wall, ours_cpu), (base_wall, base_cpu), (lean_wall, lean_cpu) = med["ours"], med["base"], med["lean"]
    (dec_wall, dec_cpu), (chain_wall, chain_cpu), (pass_wall, pass_cpu) = med["decode"], med["chain"], med["one"]
    ours, base, one, chain = results["ours"], results["base"], results["one"], results["chain"]
    print(f"clip: {video.name}, {seconds:.0f} s, {SIZE[0]}x{SIZE[1]} @ {FPS} fps, {results['decode']} frames; "
          f"medians of {rounds} interleaved rounds")
    print(f"scores ours     : {np.round(ours, 2).tolist()}")
    print(f"scores baseline : {np.round(base, 2).tolist()}  (max |diff| {np.max(np.abs(np.subtract(ours, base))):.3f})")
    rows = [("svd curate motion", ours_wall, ours_cpu),
            ("opencv loop (cvtColor every frame)", base_wall, base_cpu),
            ("opencv loop (cvtColor sampled only)", lean_wall, lean_cpu)]
    print(f"{'motion':<38}{'wall s':>8}{'cpu s':>8}{'clip s / cpu s':>16}")
    for name, wall, cpu in rows:
        print(f"{name:<38}{wall:8.2f}{cpu:8.2f}{seconds / cpu:16.1f}")
    per_round = [b[1] / o[1] for o, b in zip(runs["ours"], runs["base"])]
    print(f"speed-up vs opencv loop: {base_cpu / ours_cpu:.2f}x cpu (rounds {min(per_round):.2f}-{max(per_round):.2f}), "
          f"{base_wall / ours_wall:.2f}x wall (target >= 2x); vs the lean loop: {lean_cpu / ours_cpu:.2f}x cpu, "
          f"{lean_wall / ours_wall:.2f}x wall")
    print(f"bare decode (PyAV, all frames): {dec_wall:.2f} s wall, {dec_cpu:.2f} s cpu")
    same = "identical" if one == chain else f"max |diff| {np.max(np.abs(np.subtract(one, chain))):.2g}"
    per_round = [p[0] / d[0] for p, d in zip(runs["one"], runs["decode"])]
    print(f"cuts + motion, one decode (svd curate run, {len(one)} clips): {pass_wall:.2f} s wall, "
          f"{pass_cpu:.2f} s cpu -> {pass_wall / dec_wall:.2f}x the bare decode's wall (rounds "
          f"{min(per_round):.2f}-{max(per_round):.2f}), {pass_cpu / dec_cpu:.2f}x its cpu (target <= 2x); "
          f"scores {same} to the two-stage chain")
    print(f"cuts then motion, two stages: {chain_wall:.2f} s wall, {chain_cpu:.2f} s cpu -> "
          f"{chain_wall / dec_wall:.2f}x the bare decode's wall, {chain_cpu / dec_cpu:.2f}x its cpu")
    print("phases of svd curate motion:")
    phases(video)


if __name__ == "__main__":
    main()
