"""Cuts and motion from one decode per video: what `svd curate run` does when motion follows cuts.

Run one after the other, the two stages decode every video twice: cut detection decodes every
frame, motion scoring (even sparse) every reference frame up to its last sample. Here the
cuts pass also keeps each frame as a gray analysis frame (`GrayFrameStore`, the converter the
sparse reader uses), and once the video's clips are known the motion pairs are looked up there
and scored, on the worker's cores. The two manifests are the ones the separate stages write:
same rows, same scores (bit-identical frames, same pairs), same history records; only the time
differs. On the 60 s 720p benchmark clip the chain costs 1.6x a bare decode instead of 2.6x
(docs/benchmarks.md).

The price is the store: every frame at the analysis size (66 MB per minute of 30 fps video),
in memory up to 256 MB and in a temporary file beyond, for one video per worker at a time. A
video too long for the store's 2 GB (about 30 minutes at 30 fps) gets its motion pairs from the
sparse reader after the pass instead: the same scores, at the cost of a second (sparse) decode.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from svdcli.curate.parts import clean_parts
from svdcli.curate.stages.cuts import (CutsConfig, CutsStage, CutsSummary, decoder_threads, find_videos_or_fail,
                                       run_video_stage, write_cuts_manifest)
from svdcli.curate.stages.motion import MotionConfig, MotionStage, flow_size, score_clips

MOTION_COLUMNS = tuple(c for c in MotionStage.columns if c != "clip_id")
STORE_BYTES = 2 << 30  # per worker; a longer video's motion pairs are read from the file again


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

        from svdcli.video.sparse import read_gray_at

        size_for = lambda w, h: flow_size(w, h, self.motion)  # noqa: E731
        with GrayFrameStore(size_for, max_bytes=STORE_BYTES) as store:
            rows = super().process(payload, frame_hooks=[store.feed])
            read = store.frames_at
            if store.overflowed:  # a long video: read its pairs from the file, as `svd curate motion` does
                size = flow_size(rows[0]["width"], rows[0]["height"], self.motion)
                read = lambda times: read_gray_at(payload, times, size, threads=1)  # noqa: E731
            clips = [r for r in rows if r["status"] == "ok"]  # as `svd curate motion` scores them
            try:
                scored = score_clips(clips, read, self.motion, self.pair_threads)
            except Exception as exc:  # noqa: BLE001 - a motion failure leaves the cuts intact
                scored = [{"clip_id": r["clip_id"], "motion_error": f"{type(exc).__name__}: {exc}"} for r in clips]
        by_clip = {r["clip_id"]: r for r in scored}
        return [{**row, **by_clip.get(row["clip_id"], {})} for row in rows]


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
