"""Cuts and motion from one decode per video: what `svd curate run` does when motion follows cuts.

Run one after the other, the two stages decode every video twice: cut detection decodes every
frame, motion scoring (even sparse) every reference frame up to its last sample. Here the
cuts pass also hands its decoded frames to a `GrayFrameStore` (the converter the sparse reader
uses), and once the video's clips are known the motion pairs are looked up there and scored.
The two manifests are the ones the separate stages write: same rows, same scores (bit-identical
frames, same pairs), same history records; only the time differs.

Most of the work happens during the pass, not after it (`LikelyPairs`): a clip's pairs follow
from its start, and clips start at the video start and at hard cuts, which the native level
names a batch (~1 s) after they pass. So each frame is held (decoded, not yet converted) until
the native level has judged it; then only the frames of the likely pairs are converted (~4 of
every 25 at 25 fps: a swscale conversion to 256x144 costs ~0.25 ms a frame of 720p), and a pair
whose two frames are in is scored at once on another thread while the decoder goes on. At the
end every clip's pairs are taken from what was scored; a clip that starts elsewhere (after a
dissolve or fade the slow levels find at the end, a gap, a split) has its pairs scored then,
from the frames kept or, for frames not kept, from a sparse read of the file: the same frames,
so the same scores, at the cost of that second (partial) decode.

The price is memory: up to 160 MB of decoded frames held per worker (about 36 frames of 1080p,
fewer of 4K: the rest are converted without waiting, as if every frame were wanted), and the
kept gray frames (at most all of them, 66 MB per minute of 30 fps video) in memory up to
256 MB and in a temporary file beyond. A video too long for the store's 2 GB (about 30 minutes
at 30 fps) gets its remaining motion pairs from the sparse reader after the pass instead.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from svdcli.curate.parts import clean_parts
from svdcli.curate.stages.cuts import (CutsConfig, CutsStage, CutsSummary, decoder_threads, find_videos_or_fail,
                                       run_video_stage, write_cuts_manifest)
from svdcli.curate.stages.motion import PAIR_GAP, MotionConfig, MotionStage, PairScorer, flow_size, score_clips

MOTION_COLUMNS = tuple(c for c in MotionStage.columns if c != "clip_id")
STORE_BYTES = 2 << 30  # per worker; a longer video's motion pairs are read from the file again
EPS = 1e-4  # seconds: the frame shown at t is the last one whose time is <= t + EPS (the readers' rule)


class LikelyPairs:
    """The motion pairs a cuts pass will most likely need, from the hard cuts found so far
    (a `FrameSelector` of the frame store); pairs whose frames are both in go to `scorer`.

    The pairs of a clip starting at s are `sample_pairs`' grid: first = s + (margin + 0.5)
    frames, then every `interval`, each with its partner `step` later; the end of the clip is not
    known yet, so the grid runs on to the next start (a few pairs past a clip's end are scored
    for nothing). Guesses cost time when wrong, never scores: `score_clips` uses a scored pair
    only where the pair it needs shows the same two frames.
    """

    def __init__(self, native, cfg: MotionConfig, fps: float, trim: float, scorer: PairScorer):
        self.native, self.cfg, self.trim, self.scorer = native, cfg, trim, scorer
        self.frame = 1.0 / fps
        self.step = max(1, round(fps * PAIR_GAP)) * self.frame  # as sample_pairs spaces a pair
        self.done = False  # the pass is over: every cut is known
        self.start = 0.0  # where the clip of the frames now being decided starts
        self.cuts_seen = 0
        self.roles: dict[float, list[tuple[float, int, int]]] = {}  # frame time -> (start, j, 0 | 1) of its pairs
        self.firsts: dict[tuple[float, int], tuple[float, np.ndarray]] = {}  # (start, j) -> first frame

    def wants(self, t: float, next_t: float) -> bool | None:
        """Whether the frame shown from `t` until `next_t` is on the grid of its clip; None until
        the native level has judged it (a cut there would start a new grid)."""
        times, window = self.native.times, self.native.detector.window
        if not self.done and (len(times) <= window or times[-1 - window] < t):
            return None
        found = self.native.found
        while self.cuts_seen < len(found) and times[found[self.cuts_seen][0]] + self.trim <= t + EPS:
            self.start = times[found[self.cuts_seen][0]] + self.trim
            self.cuts_seen += 1
        if next_t == float("inf"):
            next_t = t + self.frame
        first, interval = self.start + (self.cfg.margin_frames + 0.5) * self.frame, self.cfg.interval
        roles = []
        lowest = max(0, int((t - EPS - self.step - first) // interval))
        for j in range(lowest, int((next_t - EPS - first) // interval) + 1):
            a = first + j * interval  # sample_pairs' arithmetic
            for slot, at in ((0, a), (1, a + self.step)):
                if t <= at + EPS < next_t:  # this frame is the one shown at `at`
                    roles.append((self.start, j, slot))
        if roles:
            self.roles[t] = roles
        return bool(roles)

    def took(self, t: float, gray: np.ndarray) -> None:
        """A wanted frame is in: keep it as a pair's first frame, or score the pair it completes."""
        for start, j, slot in self.roles.pop(t, ()):
            if slot == 0:
                self.firsts[(start, j)] = (t, gray)
                continue
            first = self.firsts.pop((start, j), None)
            if first is not None and t - first[0] > 1e-6:
                self.scorer.submit(first[0], first[1], t, gray)


class CutsMotionStage(CutsStage):
    """Cuts rows with the motion columns of each clip filled in from the same decode."""

    name = "cuts-motion"

    def __init__(self, cfg: CutsConfig, motion: MotionConfig, threads: int = 0, pair_threads: int = 1,
                 explain: str | None = None):
        super().__init__(cfg, threads, explain=explain)
        self.motion, self.pair_threads = motion, pair_threads
        self.columns = self.columns + MOTION_COLUMNS

    def settings(self) -> dict:
        return {"cuts": asdict(self.cfg), "motion": asdict(self.motion)}

    def process(self, payload: str) -> list[dict]:
        from svdcli.video.gray import GrayFrameStore

        cascade = self.detector()
        size_for = lambda w, h: flow_size(w, h, self.motion)  # noqa: E731
        with PairScorer(self.motion, self.pair_threads) as scorer, \
                GrayFrameStore(size_for, max_bytes=STORE_BYTES) as store:

            def on_open(fps: float) -> None:  # the pairs' grid needs the frame rate
                if cascade.native.spec is not None:  # else no cut is known before the end: keep every frame
                    store.select = LikelyPairs(cascade.native, self.motion, fps, self.cfg.trim, scorer)

            rows = super().process(payload, frame_hooks=[store.feed], cascade=cascade, on_open=on_open)
            if store.select is not None:
                store.select.done = True
            store.finish()
            clips = [r for r in rows if r["status"] == "ok"]  # as `svd curate motion` scores them
            try:
                scored = score_clips(clips, lambda times: self._frames(payload, store, times), self.motion,
                                     scorer=scorer)
            except Exception as exc:  # noqa: BLE001 - a motion failure leaves the cuts intact
                scored = [{"clip_id": r["clip_id"], "motion_error": f"{type(exc).__name__}: {exc}"} for r in clips]
        by_clip = {r["clip_id"]: r for r in scored}
        return [{**row, **by_clip.get(row["clip_id"], {})} for row in rows]

    def _frames(self, payload: str, store, times: list[float]) -> tuple[np.ndarray, list[float]]:
        """Frames shown at `times`: from the store, and those it did not keep from the file (the
        sparse reader's frames, which `svd curate motion` would score)."""
        from svdcli.video.sparse import read_gray_at

        if store.overflowed:  # a long video: read its pairs from the file, as `svd curate motion` does
            return read_gray_at(payload, times, store.convert.size, threads=self.threads)
        frames, shown = store.kept_at(times)
        missing = [i for i, frame in enumerate(frames) if frame is None]
        if missing:
            extra, extra_shown = read_gray_at(payload, [times[i] for i in missing], store.convert.size,
                                              threads=self.threads)
            for i, frame, at in zip(missing, extra, extra_shown):
                frames[i], shown[i] = frame, at
        return np.stack(frames), shown


def run_cuts_motion(inputs: list[str | Path], out: Path, cfg: CutsConfig, motion: MotionConfig, *,
                    workers: int = 1, rank: int = 0, world_size: int = 1, progress=None, executor=None,
                    threads: int = 0, explain: str | Path | None = None) -> tuple[CutsSummary, pa.Table | None]:
    """Write the cuts manifest `out` as `run_cuts` does; also return the motion rows of its clips
    (clip_id + motion columns) for `write_motion_manifest`, or None while the run is incomplete."""
    import os

    scan = find_videos_or_fail(inputs)
    videos = scan.videos
    pair_threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    stage = CutsMotionStage(cfg, motion, decoder_threads(threads, workers), pair_threads, str(explain) if explain else None)
    table, summary = run_video_stage(stage, videos, out, workers=workers, rank=rank, world_size=world_size,
                                     progress=progress, executor=executor)
    summary.skipped = scan.skipped
    if table is None:
        return summary, None
    write_cuts_manifest(table, out, cfg, inputs, len(videos))
    clean_parts(out, stage)
    ok = pc.equal(table.column("status"), "ok")
    return summary, table.filter(ok).select(["clip_id", *MOTION_COLUMNS])


def write_motion_manifest(cuts_manifest: Path, out: Path, rows: pa.Table, motion: MotionConfig) -> Path:
    """The motion manifest `svd curate motion` would write from `cuts_manifest`, from `rows`."""
    from svdcli.curate.per_clip import write_scored_manifest
    from svdcli.manifest.io import read_manifest

    manifest = read_manifest(cuts_manifest)
    write_scored_manifest(MotionStage(motion), manifest, Path(cuts_manifest), rows, Path(out))
    return Path(out)
