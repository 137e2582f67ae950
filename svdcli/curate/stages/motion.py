"""Motion scoring: dense Farneback optical flow on frame pairs sampled at 2 fps inside a clip.

Definition (what `motion_score` means):

- Sample times every 0.5 s (2 fps) by timestamp inside [start_time, end_time), skipping
  `margin_frames` frames at each end so a boundary frame left by cut detection is not used.
  At each sample time we take a PAIR: that frame and the frame 1/15 s later (2 frames at 30 fps,
  4 at 60, 1 at 10 fps; the nearest frame).
- Frames are converted to gray at a FIXED analysis size: the long side scaled to 256 px, aspect
  kept, both sides even (1280x720 -> 256x144, 640x480 -> 256x192, 1080x1920 -> 144x256), so
  scores are comparable across videos of any resolution.
- A pair's value is the mean Farneback flow magnitude over the frame, in analysis pixels,
  divided by the time between the two frames shown and expressed per 1/15 s, so videos of any
  frame rate compare. That time comes from the frames' timestamps, so dropped frames (variable
  frame rate) do not bias the score; for codecs other than H.264 in MP4 it is the nominal gap.
- The clip's score is the MEDIAN over pairs, so a pair spanning a leftover cut or a flash
  cannot dominate (a mean over the clip would be).

Units: analysis pixels (256 px long side) per 1/15 s; numerically the same as pixels per
30 fps frame at a 512 px long side. The paper's threshold 0.25 thus means a drift of 1/1000
of the frame's long side per 1/15 s: 0.625 px per frame for 1280x720 at 30 fps (a pan crossing
the frame in ~70 s). Static shots score ~0.0-0.1 (compression noise), a 1 px/frame pan of a
1280x720 30 fps video scores 0.4, fast pans 5-20.

Why pairs 1/15 s apart and not frames 0.5 s apart: Farneback follows displacements of up to
~25 analysis px, and a fast pan moves much more in 0.5 s, where its estimate collapses (scores
would stop growing with speed). 1/15 s keeps ~60 px/frame pans (720p) in range while moving a
slow pan far enough to stand above the noise floor at 256 px.

Camera motion: the same flow fields (no extra decode, no extra flow) also give each clip a
`camera_motion` label and its confidence: a robust global affine fit per pair (translation,
divergence for zoom, curl for rotation, residual for independent motion), labelled from the
median over the clip's pairs; see `svdcli.curate.scorers.camera_motion`. The camera-motion
LoRAs of the SVD paper (section 6.2) are trained on clips of one label.

Decoding: H.264 frames that no other frame references (most B-frames) are decoded only where a
sample shows them, and the tail of a GOP that no sample needs before the next IDR frame is never
decoded (see `svdcli.video.sparse`); whole GOPs need nothing from each other, so a worker's
share of the cores reads that many of them at once. The pairs are converted straight to gray at
the analysis size by swscale, and each pair is scored on other threads (as many) as soon as its
two frames are in, so Farneback runs while the decoders work on the next frames (`PairScorer`).
When motion follows cuts in `svd curate run` (or `svd curate cuts --motion-out`), no second
decode happens at all: the cuts pass converts the frames of the clips' likely pairs and scores
them as it goes (`svdcli.curate.stages.cuts_motion`), with the same frames and so the same scores.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa

from svdcli.curate.per_clip import run_clip_stage
from svdcli.curate.scorers.camera_motion import clip_camera_motion
from svdcli.curate.runner import RunResult
from svdcli.curate.settings import setting
from svdcli.curate.stage import ClipStage, StageSpec
from svdcli.manifest.schema import CLIP_LOCATION, Column
from svdcli.video.probe import VideoError
from svdcli.video.seek import analysis_size
from svdcli.video.sparse import iter_gray_at

ANALYSIS_LONG_SIDE = 256
SAMPLE_INTERVAL = 0.5  # seconds between sample pairs (2 fps)
PAIR_GAP = 1 / 15  # seconds between the two frames of a pair; flow is expressed per PAIR_GAP
# the unit of motion_score, as the module docstring defines it; other modules refer to this one
MOTION_UNITS = "analysis pixels per 1/15 s; analysis size = long side 256 px"


@dataclass(frozen=True)
class MotionConfig:
    """Settings of the motion stage; every field changes the scores (and the fingerprint).

    Recipe keys only: `svd curate motion` has no option for them (OpenCV's limits bound the
    Farneback ones)."""

    long_side: int = setting(ANALYSIS_LONG_SIDE, "Long side of the analysis frames, pixels.", ge=16, option=False)
    interval: float = setting(SAMPLE_INTERVAL, "Seconds between sample pairs.", gt=0, option=False)
    margin_frames: int = setting(2, "Frames skipped at each end of the clip.", ge=0, option=False)
    # Farneback parameters (OpenCV's); a 4-level pyramid follows ~25 analysis px per pair
    pyr_scale: float = setting(0.5, gt=0, lt=1, option=False)
    levels: int = setting(4, ge=1, option=False)
    winsize: int = setting(15, ge=1, option=False)
    iterations: int = setting(3, ge=1, option=False)
    poly_n: int = setting(5, ge=1, option=False)
    poly_sigma: float = setting(1.2, gt=0, option=False)


@dataclass(frozen=True)
class MotionSummary:
    """What only the summary line of `svd curate motion` reads."""

    threshold: float = setting(0.25, "Only for the summary: how many clips score below it (static).")


COLUMNS = (
    Column("motion_score", pa.float32(), "motion",
           "median over frame pairs (1/15 s apart, sampled at 2 fps) of the mean Farneback flow "
           "magnitude, in analysis pixels per 1/15 s; analysis size = long side 256 px, aspect kept "
           "(see svdcli/curate/stages/motion.py); the recipe drops clips below 0.25 as static"),
    Column("motion_pairs", pa.int32(), "motion", "number of frame pairs scored"),
    Column("motion_pair_scores", pa.list_(pa.float32()), "motion",
           "per-pair mean flow magnitudes (same units), in time order; a spike is a leftover cut"),
    Column("camera_motion", pa.string(), "motion",
           "static, pan_left, pan_right, tilt_up, tilt_down, zoom_in, zoom_out, rotate or complex: the "
           "robust global affine fit of the same flow fields (svdcli/curate/scorers/camera_motion.py)"),
    Column("camera_motion_confidence", pa.float32(), "motion",
           "0..1: the dominant motion's share x the share of textured points following the fit x the "
           "share of the clip's pairs with the same label"),
    Column("motion_error", pa.string(), "motion", "error message when motion could not be scored"),
)


def flow_size(width: int, height: int, cfg: MotionConfig = MotionConfig()) -> tuple[int, int]:
    """The gray analysis size of a video's pairs; small videos are scaled up too, as the unit of
    the score is a pixel at a `cfg.long_side` long side."""
    return analysis_size(width, height, cfg.long_side, upscale=True)


def pair_flow(a: np.ndarray, b: np.ndarray, cfg: MotionConfig = MotionConfig()) -> np.ndarray:
    """Farneback flow (H, W, 2) from gray frame `a` to gray frame `b`, in pixels."""
    import cv2

    return cv2.calcOpticalFlowFarneback(a, b, None, cfg.pyr_scale, cfg.levels, cfg.winsize,
                                        cfg.iterations, cfg.poly_n, cfg.poly_sigma, 0)


def mean_magnitude(flow: np.ndarray) -> float:
    return float(np.sqrt(flow[..., 0] ** 2 + flow[..., 1] ** 2).mean())


def pair_flow_magnitude(a: np.ndarray, b: np.ndarray, cfg: MotionConfig = MotionConfig()) -> float:
    """Mean Farneback flow magnitude from gray frame `a` to gray frame `b`, in pixels."""
    return mean_magnitude(pair_flow(a, b, cfg))


def motion_score(pairs: np.ndarray, gaps: list[float], cfg: MotionConfig = MotionConfig(),
                 threads: int = 1) -> tuple[float, list[float]]:
    """Median over frame pairs of the mean flow magnitude, in analysis px per 1/15 s.

    `pairs` is (P, 2, H, W) uint8 gray at the analysis size, P >= 1; `gaps` are the P times (s)
    between the two frames of each pair. Returns (score, per-pair values).
    """
    if pairs.ndim != 4 or pairs.shape[1] != 2 or len(pairs) < 1:
        raise ValueError(f"need gray frame pairs of shape (P, 2, H, W), got {pairs.shape}")
    values = pair_values(pairs, gaps, cfg, threads)
    return float(np.median(values)), values


def pair_values(pairs, gaps: list[float], cfg: MotionConfig = MotionConfig(), threads: int = 1) -> list[float]:
    """Flow magnitude of each (a, b) pair in analysis px per 1/15 s; `threads` > 1 scores pairs
    concurrently (OpenCV releases the GIL; each pair's value is the same either way)."""
    return [value for value, _ in pair_measures(pairs, gaps, cfg, threads, camera=False)]


def pair_measure(a: np.ndarray, b: np.ndarray, gap: float, cfg: MotionConfig = MotionConfig(),
                 camera: bool = True) -> tuple[float, dict | None]:
    """(flow magnitude in analysis px per 1/15 s, camera-motion parameters) of gray frames a, b shown
    `gap` s apart, from one Farneback flow (the camera fit reads the same field)."""
    from svdcli.curate.scorers.camera_motion import flow_parameters

    flow = pair_flow(a, b, cfg)  # (H, W, 2)
    value = mean_magnitude(flow) * PAIR_GAP / gap
    return value, (flow_parameters(flow * (PAIR_GAP / gap), a) if camera else None)


def pair_measures(pairs, gaps: list[float], cfg: MotionConfig = MotionConfig(), threads: int = 1,
                  camera: bool = True) -> list[tuple[float, dict | None]]:
    """`pair_measure` of each (a, b) pair; `threads` > 1 scores pairs concurrently (OpenCV releases
    the GIL; each pair's value is the same either way)."""
    def one(k: int) -> tuple[float, dict | None]:
        return pair_measure(pairs[k][0], pairs[k][1], gaps[k], cfg, camera)

    if threads <= 1 or len(pairs) < 2:
        return [one(k) for k in range(len(pairs))]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(pairs))) as pool:
        return list(pool.map(one, range(len(pairs))))


class PairScorer:
    """`pair_measure` of frame pairs on worker threads, each pair once, known by the times of its
    two frames.

    A pair submitted while frames are still being decoded is scored meanwhile (FFmpeg and
    OpenCV both release the GIL), so reading and scoring overlap; its value is the same as
    scored later, from the same frames.
    """

    def __init__(self, cfg: MotionConfig = MotionConfig(), threads: int = 1):
        from concurrent.futures import ThreadPoolExecutor

        self.cfg = cfg
        self.pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="motion-pairs")
        self.futures: dict[tuple[float, float], object] = {}  # (time of a, time of b) -> Future

    def submit(self, ta: float, a: np.ndarray, tb: float, b: np.ndarray) -> None:
        """Score frames a (shown at `ta`) and b (at `tb`, after `ta`) unless that pair is known."""
        if (ta, tb) not in self.futures:
            self.futures[(ta, tb)] = self.pool.submit(pair_measure, a, b, tb - ta, self.cfg)

    def measure(self, ta: float, tb: float) -> tuple[float, dict]:
        """The submitted pair's (value, camera parameters), waiting for it if needed."""
        return self.futures[(ta, tb)].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PairScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def sample_pairs(start: float, end: float, fps: float, cfg: MotionConfig = MotionConfig()) -> list[tuple[float, float]]:
    """(t, t + ~1/15 s) pairs every `cfg.interval` s inside [start, end), margins skipped.

    A clip too short for the margins is sampled without them, one too short for the gap gets a
    pair of adjacent frames; a clip of fewer than two frames gives no pair.
    """
    frame = 1.0 / fps
    eps = 1e-6
    gap = max(1, round(fps * PAIR_GAP)) * frame
    for margin, step in ((cfg.margin_frames, gap), (0, gap), (0, frame)):
        # times sit half a frame after a frame's nominal start, so rounding cannot pick its neighbour
        first = start + (margin + 0.5) * frame
        last = end - (margin + 0.5) * frame - step  # the pair's second frame stays inside the clip
        if last - first < -eps:
            continue
        count = int((last - first + eps) // cfg.interval) + 1
        return [(first + j * cfg.interval, first + j * cfg.interval + step) for j in range(count)]
    return []


class MotionStage(ClipStage):
    """Scores every ok clip of a manifest: `motion_score`, `motion_pairs`, `motion_pair_scores`."""

    name = "motion"
    columns = ("clip_id", *(c.name for c in COLUMNS))
    needs = (*CLIP_LOCATION, "fps")  # the pairs are placed on the frame grid

    def __init__(self, cfg: MotionConfig = MotionConfig(), threads: int = 1):
        self.cfg = cfg
        self.threads = threads  # GOPs read at once and pairs scored at once (0 = one per core); same scores

    def settings(self) -> dict:
        return asdict(self.cfg)

    def process(self, payload: dict) -> list[dict]:
        """Read the sample pairs of all clips of one video in one pass, scoring each pair on
        other threads as soon as both its frames are decoded."""
        clips = payload["clips"]
        size = flow_size(clips[0]["width"], clips[0]["height"], self.cfg)
        read = lambda times: iter_gray_at(payload["video_path"], times, size, self.threads)  # noqa: E731
        return score_clips(clips, read, self.cfg, threads=self.threads or os.cpu_count() or 1)


def score_clips(clips: list[dict], read, cfg: MotionConfig = MotionConfig(), threads: int = 1,
                scorer: PairScorer | None = None) -> list[dict]:
    """Motion rows for `clips` (dicts with clip_id, start_time, end_time, fps) of one video.

    `read(times)` gives the frames at the sorted sample times: gray (N, H, W) frames and the time
    of the frame shown at each, as (frames, shown), or as an iterable of (frame, shown) in order
    (the sparse reader's `iter_gray_at`: each pair is scored while later frames are decoded).
    `threads` score pairs concurrently; a `scorer` passed in may hold pairs scored already (the
    cuts pass scores likely pairs while it decodes). Where an iterable read stops part-way (a
    video cut off or damaged: a VideoError), the clips whose frames were all read are scored and
    the others carry that error.
    """
    plans = [sample_pairs(c["start_time"], c["end_time"], c["fps"], cfg) for c in clips]
    wanted = sorted({t for pairs in plans for pair in pairs for t in pair})
    if not wanted:
        return [_too_short(c) for c in clips]
    own = scorer is None
    scorer = scorer or PairScorer(cfg, threads)
    try:
        when, error = _submit_as_read(read(wanted), wanted, plans, scorer)  # sample time -> time of the frame shown
        rows = []
        for clip, pairs in zip(clips, plans):
            if error is not None and any(b not in when for _, b in pairs):
                rows.append({"clip_id": clip["clip_id"], "motion_error": f"{type(error).__name__}: {error}"})
                continue
            # the real gap between the frames shown (variable frame rate); a dropped frame can
            # make both samples show the same frame, which measures nothing
            pairs = [(a, b) for a, b in pairs if when[b] - when[a] > 1e-6]
            if not pairs:
                rows.append(_too_short(clip))
                continue
            measures = [scorer.measure(when[a], when[b]) for a, b in pairs]
            values = [v for v, _ in measures]
            camera, confidence = clip_camera_motion([p for _, p in measures])
            rows.append({"clip_id": clip["clip_id"], "motion_score": float(np.median(values)),
                         "motion_pairs": len(values), "motion_pair_scores": values,
                         "camera_motion": camera, "camera_motion_confidence": confidence})
        return rows
    finally:
        if own:
            scorer.close()


def _submit_as_read(frames, wanted: list[float], plans: list[list[tuple[float, float]]],
                    scorer: PairScorer) -> tuple[dict[float, float], VideoError | None]:
    """Hand each pair to `scorer` once both its frames are read; returns sample time -> time shown,
    and the VideoError that stopped an iterable read part-way (None when every frame was read)."""
    firsts: dict[float, list[float]] = {}  # a pair's second sample time -> the first times paired with it
    for pairs in plans:
        for a, b in pairs:
            firsts.setdefault(b, []).append(a)
    items = zip(*frames) if isinstance(frames, tuple) else frames
    got: dict[float, np.ndarray] = {}
    when: dict[float, float] = {}
    try:
        for t, (frame, shown) in zip(wanted, items):
            got[t], when[t] = frame, shown
            for a in firsts.get(t, ()):
                if shown - when[a] > 1e-6:  # the pair shows two different frames
                    scorer.submit(when[a], got[a], shown, frame)
    except VideoError as exc:
        if not when:
            raise  # nothing read: the video's one error, as for any other failure
        return when, exc
    if len(when) < len(wanted):
        raise ValueError(f"the reader gave {len(when)} frames for {len(wanted)} sample times")
    return when, None


def _too_short(clip: dict) -> dict:
    frames = clip.get("num_frames")
    return {"clip_id": clip["clip_id"], "motion_error": f"clip too short to score motion ({frames} frames; need 2)"}


def run_motion(manifest: Path, out: Path | None = None, cfg: MotionConfig | None = None,
               **run_kwargs) -> tuple[RunResult, Path | None]:
    """Score every ok clip of `manifest` and write it (to `out`, default in place); the settings
    are `cfg` or MotionConfig fields among the keywords, the other keywords run_clip_stage's."""
    from svdcli.curate.executors.local import cores_per_worker

    names = {f.name for f in fields(MotionConfig)}
    cfg = cfg or MotionConfig(**{k: run_kwargs.pop(k) for k in list(run_kwargs) if k in names})
    # a worker's share of the cores: as many GOPs read at once (one decoder thread each) and
    # as many Farneback threads. Frame threads on the sparse read cost 10-15% more CPU and
    # barely shorten it (each frame waits on the one it references); GOPs need nothing from
    # each other: 2 of them at once take 0.8 s where one thread takes 1.45 s (720p, 240 frames).
    # A worker placed by an executor (Ray) has the one core it reserves (`Resources.cpus`).
    local = run_kwargs.get("executor") is None
    share = cores_per_worker(run_kwargs.get("workers") or 1) if local else 1
    return run_clip_stage(MotionStage(cfg, threads=share), manifest, out, **run_kwargs)


def summarize(path: Path, threshold: float) -> str:
    """One line for the user: clips scored, errors, and how many fall below `threshold`."""
    from svdcli.manifest.io import read_manifest

    table = read_manifest(path, columns=["motion_score", "motion_error"])
    scores = np.array([s for s in table.column("motion_score").to_pylist() if s is not None], np.float32)
    errors = sum(e is not None for e in table.column("motion_error").to_pylist())
    median = f"{np.median(scores):.2f}" if len(scores) else "n/a"
    return (f"motion: {len(scores)} clips scored (median {median}), {errors} errors, "
            f"{int((scores < threshold).sum())} below {threshold:g} (static) -> {path}")


SPEC = StageSpec(
    name="motion",
    columns=COLUMNS,
    config=MotionConfig,
    runner=run_motion,
    summary=summarize,
    summary_options=MotionSummary,
    histograms=(("motion_score", "motion score (analysis px per 1/15 s)"),
                ("camera_motion_confidence", "camera-motion label confidence"),),
    scores=("motion_score",),
)
