"""Cuts and motion from one decode per video: what `svd curate run` does when motion follows cuts.

Run one after the other, the two stages decode every video twice: cut detection decodes every
frame, motion scoring (even sparse) every reference frame up to its last sample. Here the
cuts pass also hands its decoded frames to a `GrayFrameStore` (the converter the sparse reader
uses), and once the video's clips are known the motion pairs are looked up there and scored.
The two manifests are the ones the separate stages write: same rows, same scores (bit-identical
frames, same pairs), same history records; only the time differs.

Most of the work happens during the pass, not after it (`LikelyPairs`): a clip's pairs follow
from its start, and clips start at the video start and at hard cuts, which the native level
names a batch (~1 s) after they pass, or inside a span where a slow level may find a gradual
transition, which it suspects as the span passes (~1.5 s at 8 fps) and settles a few seconds
later (`Cascade.settled`: the span test with the change after it, the transition located and
gated, exactly as the end of the pass will). So each frame is held (decoded, not yet
converted) until the levels have judged it; then only the frames of the likely pairs are
converted (~4 of every 25 at 25 fps; a swscale conversion to 256x144 costs ~0.25 ms a frame of
720p), and a pair whose two frames are in is scored at once on another thread while the
decoder goes on. Frames of a suspect span (a dissolve, a fade, a fast pan) wait until the
levels have settled where clips start there; those that cannot wait (more than the frames
held) are kept. At the end every clip's pairs are taken from what was scored, the
rest scored from the frames kept; should a frame a pair needs not have been kept (a clip
after a hard cut that a later fade moved, a gap in the frame times), it is read from the file
(the sparse reader's frames: the same frames, the same scores, at the cost of that read).
Where clip starts cannot be followed at all (no native level, TransNetV2 boundaries, splits
by --max-length), every frame is kept. Where the pass reads runs of GOPs on several threads
(`decode_once`: H.264 in MP4 with more than one core to a worker), the store gets the readers'
pictures up to 128 MB not yet taken and, beyond, the gray frames the readers converted (a run
read ahead can hold its pictures only so long); what is kept and scored is the same.

The price is memory: up to 256 MB of decoded frames held per worker (~2.8 s of video: 70
frames of 720p25 take ~100 MB, 80 of 1080p30 ~250 MB; of 4K fewer are held and the rest
converted without waiting, as if every frame were wanted), and the kept gray frames (at most
all of them, 66 MB per minute of 30 fps video) in memory up to 256 MB and in a temporary file
beyond. A video too long for the store's 2 GB (about 30 minutes at 30 fps) gets its remaining
motion pairs from the sparse reader after the pass instead.
"""
from __future__ import annotations

import bisect
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from svdcli.curate.parts import clean_parts
from svdcli.curate.stages.cuts import (CutsConfig, CutsStage, CutsSummary, decoder_threads, find_videos_or_fail,
                                       run_video_stage, write_cuts_manifest)
from svdcli.curate.stages.motion import (PAIR_GAP, MotionConfig, MotionStage, PairScorer, flow_size, sample_pairs,
                                         score_clips)
from svdcli.manifest.io import has_status

MOTION_COLUMNS = tuple(c for c in MotionStage.columns if c != "clip_id")
STORE_BYTES = 2 << 30  # per worker; a longer video's motion pairs are read from the file again
HOLD_BYTES = 256 << 20  # decoded frames held per worker until the levels have judged them
EPS = 1e-4  # seconds: the frame shown at t is the last one whose time is <= t + EPS (the readers' rule)


class LikelyPairs:
    """The motion pairs a cuts pass will most likely need, from what its levels found so far (a
    `FrameSelector` of the frame store); pairs whose frames are both in go to `scorer`.

    The pairs of a clip starting at s are `sample_pairs`' grid: first = s + (margin + 0.5)
    frames, then every `interval`, each with its partner `step` later; the end of the clip is not
    known yet, so the grid runs on to the next start (a few pairs past a clip's end are scored
    for nothing). A frame is decided once the native level has judged it (a hard cut there
    starts a new grid) and the slow levels have measured the spans around it. Where a slow level
    may yet put a boundary (`SlowLevel.suspects`: a dissolve, a fade, or just a fast pan) with
    no hard cut in reach, the next clip's start is not known until the levels have settled the
    span (`Cascade.settled`, a few seconds later): its frames are held until then (kept where
    the store cannot hold them), up to the end of the span and the merge tolerance, or the first
    hard cut clear of it. A suspect span around a hard cut is taken for that cut. Once the pass
    is over the clips are known (`last`), and the frames still held are kept exactly where a
    pair shows them.

    Guesses cost time when wrong, never scores: `score_clips` takes a scored pair only where the
    pair it needs shows the same two frames, and what was not kept is read from the file.
    """

    def __init__(self, cascade, cfg: MotionConfig, fps: float, trim: float, scorer: PairScorer):
        self.cascade, self.native, self.slow = cascade, cascade.native, cascade.slow
        self.tolerance = cascade.cfg.merge_tolerance
        self.cfg, self.trim, self.scorer = cfg, trim, scorer
        self.frame = 1.0 / fps
        self.step = max(1, round(fps * PAIR_GAP)) * self.frame  # as sample_pairs spaces a pair
        self.start = 0.0  # where the clip of the frames now being decided starts
        self.cuts_seen = 0
        self.since = [0] * len(self.slow)  # each slow level's next sample to look at
        self.complete = [0.0] * len(self.slow)  # each slow level's suspects are known before this time
        self.suspects: list[tuple[float, float]] = []  # (from, to) where a slow level may put a boundary
        self.unsure_from: float | None = None  # frames from here on may belong to a clip no level named yet
        self.unsure_to = float("-inf")
        self.unsure_start = 0.0  # where the clip of the last frame decided in the span starts
        self.decided = 0.0  # the time of that frame (the span's start before any)
        self.settled: list[float] = []  # where clips start in the unsure span, as far as the levels settled it
        self.settled_until = float("-inf")
        self.measured: tuple = ()  # what the levels had measured when `settled` was taken
        self.final: list[float] | None = None  # after the pass: the sample times of every clip's pairs
        self.roles: dict[float, list[tuple[float, int, int]]] = {}  # frame time -> (start, j, 0 | 1) of its pairs
        self.firsts: dict[tuple[float, int], tuple[float, np.ndarray]] = {}  # (start, j) -> first frame

    def last(self, clips: list[dict]) -> None:
        """The pass is over and these are the clips: decide the frames still held by their pairs."""
        plans = [sample_pairs(c["start_time"], c["end_time"], c["fps"], self.cfg) for c in clips]
        self.final = sorted({t for pairs in plans for pair in pairs for t in pair})

    def wants(self, t: float, next_t: float) -> bool | None:
        """Whether the frame shown from `t` until `next_t` is on its clip's grid (or its clip's
        start is not known); None until the levels have judged it."""
        if self.final is not None:
            k = bisect.bisect_left(self.final, t - EPS)  # the first sample this frame may show
            return k < len(self.final) and self.final[k] + EPS < next_t
        if not self._judged(t):
            return None
        self._catch_up(t)
        start = self.start
        if self.unsure_from is not None:  # its clip may start where no level has a boundary yet
            start = self._settled_start(t)
            if start is None:
                return None  # held until the levels settle the clip's start (or kept, when none can be held)
        first, interval = start + (self.cfg.margin_frames + 0.5) * self.frame, self.cfg.interval
        roles = []
        lowest = max(0, int((t - EPS - self.step - first) // interval))
        for j in range(lowest, int((next_t - EPS - first) // interval) + 1):
            a = first + j * interval  # sample_pairs' arithmetic
            for slot, at in ((0, a), (1, a + self.step)):
                if t <= at + EPS < next_t:  # this frame is the one shown at `at`
                    roles.append((start, j, slot))
        if roles:
            self.roles[t] = roles
        return bool(roles)

    def _settled_start(self, t: float) -> float | None:
        """Where the clip of the frame at `t`, inside an unsure span, starts: as far as the levels'
        boundaries from the span's start on are settled (`Cascade.settled`), else None. Past
        the span (and the merge tolerance) the clip's start is known again: the span ends."""
        if self.settled_until < t + EPS:
            measured = (len(self.native.times), *(len(level.thumbs) for level in self.slow))
            if measured == self.measured:
                return None  # nothing new since the last look
            # clips starting after the last frame decided: a boundary's new shot starts `trim` before
            bounds, until = self.cascade.settled(self.decided - self.trim - EPS)
            self.settled, self.settled_until, self.measured = [b.first_new + self.trim for b in bounds], until, measured
            if until < t + EPS:
                return None
        start = max([s for s in self.settled if s <= t + EPS], default=self.unsure_start)
        self.unsure_start, self.decided = start, t
        if t > self.unsure_to + self.tolerance:
            self._span_over(start)
        return start

    def _span_over(self, start: float) -> None:
        """The unsure span is over: clips start where the levels say again, from `start` on."""
        self.start, self.unsure_from, self.settled_until, self.measured = start, None, float("-inf"), ()

    def _judged(self, t: float) -> bool:
        """The slow levels' suspects up to `t` are known, and the native level has judged every
        frame up to `t` and up to the end of those suspect spans."""
        for i, level in enumerate(self.slow):
            spans, self.since[i], self.complete[i] = level.suspects(self.since[i])
            if spans:
                self.suspects = sorted(self.suspects + spans)
        times, window = self.native.times, self.native.detector.window
        judged = times[-1 - window] if len(times) > window else float("-inf")
        reach = max([t] + [t1 for t0, t1 in self.suspects if t0 <= t + EPS])
        return all(c > t for c in self.complete) and judged >= reach

    def _catch_up(self, t: float) -> None:
        """Take the hard cuts and suspect spans up to `t`, in time order."""
        times, found = self.native.times, self.native.found
        while True:
            cut = times[found[self.cuts_seen][0]] if self.cuts_seen < len(found) else float("inf")
            span = self.suspects[0][0] if self.suspects else float("inf")
            if span <= min(cut + self.trim, t + EPS):
                t0, t1 = self.suspects.pop(0)
                near = found[max(self.cuts_seen - 1, 0):]  # the cut of the current start, and those to come
                if not any(t0 - EPS <= times[k] <= t1 + EPS for k, _ in near):  # else: taken for that hard cut
                    if self.unsure_from is None:
                        self.unsure_from, self.unsure_start, self.decided = t0, self.start, t0
                    self.unsure_to = max(self.unsure_to, t1)
            elif cut + self.trim <= t + EPS:
                self.start, self.cuts_seen = cut + self.trim, self.cuts_seen + 1
                if self.unsure_from is not None and cut > self.unsure_to + self.tolerance:
                    self._span_over(self.start)  # no boundary found near the spans can move this clip's start
            else:
                return

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
                GrayFrameStore(size_for, max_bytes=STORE_BYTES, hold_bytes=HOLD_BYTES) as store:

            def on_open(fps: float) -> None:  # the pairs' grid needs the frame rate
                if self._guessable(cascade):
                    store.select = LikelyPairs(cascade, self.motion, fps, self.cfg.trim, scorer)

            rows = super().process(payload, frame_hooks=[store], cascade=cascade, on_open=on_open)
            clips = [r for r in rows if r["status"] == "ok"]  # as `svd curate motion` scores them
            if store.select is not None:
                store.select.last(clips)
            store.finish()
            try:
                scored = score_clips(clips, lambda times: self._frames(payload, store, times), self.motion,
                                     scorer=scorer)
            except Exception as exc:  # noqa: BLE001 - a motion failure leaves the cuts intact
                scored = [{"clip_id": r["clip_id"], "motion_error": f"{type(exc).__name__}: {exc}"} for r in clips]
        by_clip = {r["clip_id"]: r for r in scored}
        return [{**row, **by_clip.get(row["clip_id"], {})} for row in rows]

    def _guessable(self, cascade) -> bool:
        """Clip starts follow from what the cascade's levels find as they go: not where the
        native level is off or TransNetV2 adds boundaries only at the end, nor where long shots
        are split (the split points depend on where the shot ends): then every frame is kept."""
        return cascade.native.spec is not None and not cascade.extra and not self.cfg.max_length

    def _frames(self, payload: str, store, times: list[float]) -> tuple[np.ndarray, list[float]]:
        """Frames shown at `times`: from the store, and those it did not keep from the file (the
        sparse reader's frames, which `svd curate motion` would score)."""
        from svdcli.video.sparse import read_gray_at

        if store.overflowed:  # a long video: read its pairs from the file, as `svd curate motion` does
            return read_gray_at(payload, times, store.size, threads=self.threads)
        frames, shown = store.kept_at(times)
        missing = [i for i, frame in enumerate(frames) if frame is None]
        if missing:
            extra, extra_shown = read_gray_at(payload, [times[i] for i in missing], store.size,
                                              threads=self.threads)
            for i, frame, at in zip(missing, extra, extra_shown):
                frames[i], shown[i] = frame, at
        return np.stack(frames), shown


def run_cuts_motion(inputs: list[str | Path], out: Path, cfg: CutsConfig, motion: MotionConfig, *,
                    workers: int = 1, rank: int = 0, world_size: int = 1, progress=None, executor=None,
                    threads: int = 0, explain: str | Path | None = None) -> tuple[CutsSummary, pa.Table | None]:
    """Write the cuts manifest `out` as `run_cuts` does; also return the motion rows of its clips
    (clip_id + motion columns) for `write_motion_manifest`, or None while the run is incomplete."""
    from svdcli.curate.executors.local import cores_per_worker

    scan = find_videos_or_fail(inputs)
    videos = scan.videos
    pair_threads = cores_per_worker(workers)
    stage = CutsMotionStage(cfg, motion, decoder_threads(threads, workers), pair_threads, str(explain) if explain else None)
    table, summary = run_video_stage(stage, videos, out, workers=workers, rank=rank, world_size=world_size,
                                     progress=progress, executor=executor)
    summary.skipped = scan.skipped
    if table is None:
        return summary, None
    write_cuts_manifest(table, out, cfg, inputs, len(videos))
    clean_parts(out, stage)
    ok = has_status(table, "ok")
    return summary, table.filter(ok).select(["clip_id", *MOTION_COLUMNS])


def write_motion_manifest(cuts_manifest: Path, out: Path, rows: pa.Table, motion: MotionConfig) -> Path:
    """The motion manifest `svd curate motion` would write from `cuts_manifest`, from `rows`."""
    from svdcli.curate.per_clip import write_scored_manifest
    from svdcli.manifest.io import read_manifest

    manifest = read_manifest(cuts_manifest)
    write_scored_manifest(MotionStage(motion), manifest, Path(cuts_manifest), rows, Path(out))
    return Path(out)
