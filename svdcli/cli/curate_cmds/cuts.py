"""`svd curate cuts`: cascaded cut detection, videos -> clips manifest."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from svdcli.cli.common import console, user_errors


def register(app: typer.Typer) -> None:
    app.command("cuts")(cuts)


@user_errors
def cuts(
    inputs: List[Path] = typer.Argument(..., metavar="VIDEO_OR_DIR...",
                                        help="Video files and/or folders (searched recursively)."),
    out: Path = typer.Option(Path("manifests/clips.parquet"), "--out", "-o", help="Manifest to write."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Videos decoded in parallel (processes)."),
    levels: str = typer.Option("native,15,8", help="Detector levels: 'native' and/or rates in fps, comma-separated."),
    thresholds: str = typer.Option(None, help="One threshold per level, same order as --levels. "
                                   "Default: native 20 (content score), 15 fps 8, 8 fps 6 (histogram score)."),
    min_scene_len: float = typer.Option(1.0, min=0.0, help="Seconds between two cuts of one level; "
                                        "the weaker of two closer ones is dropped."),
    merge_tolerance: float = typer.Option(0.5, min=0.0, help="Seconds: cuts of different levels closer "
                                          "than this are one boundary."),
    trim: float = typer.Option(0.0, min=0.0, help="Seconds dropped after and before every cut, so "
                               "transition remnants stay out of clips (not applied at splits)."),
    min_length: float = typer.Option(0.5, min=0.0, help="Seconds: shorter segments are not clips."),
    max_length: float = typer.Option(0.0, min=0.0, help="Seconds: split longer shots into equal clips "
                                     "no longer than this (start_cause 'split'); 0 keeps shots whole."),
    motion_out: Path = typer.Option(None, "--motion-out", help="Also score motion (default settings) in the "
                                    "same decode and write the manifest `svd curate motion --manifest OUT` "
                                    "would write here: same scores, one decode instead of two."),
    rank: int = typer.Option(0, min=0, help="This machine's share of the videos (0..world-size-1)."),
    world_size: int = typer.Option(1, min=1, help="Number of machines sharing the run."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Find shot boundaries with a native / 15 fps / 8 fps cascade and write one row per clip.

    Each video is decoded once; the levels sample its frames by timestamp. Unreadable files become rows with status 'error'. An interrupted run resumes on rerun (finished videos are skipped).
    """
    import time

    from svdcli.curate.cuts import cuts_config, run_cuts
    from svdcli.errors import SvdError

    if rank >= world_size:
        raise SvdError(f"--rank {rank} must be below --world-size {world_size}")
    cfg = cuts_config(levels, thresholds, min_scene_len, merge_tolerance, trim, min_length, max_length)
    t0 = time.perf_counter()
    if motion_out is None:
        summary = run_cuts(inputs, out, cfg, workers=workers, rank=rank, world_size=world_size, progress=progress)
    else:
        from svdcli.curate.cuts_motion import run_cuts_motion, write_motion_manifest
        from svdcli.curate.motion import MotionConfig

        summary, rows = run_cuts_motion(inputs, out, cfg, MotionConfig(), workers=workers, rank=rank,
                                        world_size=world_size, progress=progress)
        if rows is not None:
            write_motion_manifest(out, motion_out, rows, MotionConfig())
    line = (f"{summary.videos} videos, {summary.clips} clips, {summary.errors} errors, "
            f"{time.perf_counter() - t0:.1f} s")
    if summary.complete:
        console().print(f"cuts: {line} -> {summary.out}")
        if motion_out is not None:
            from svdcli.curate.motion import summarize

            console().print(summarize(motion_out, 0.25))
    else:
        console().print(f"cuts: rank {rank}/{world_size} done ({line}); the manifest is written "
                        f"by the run that finishes the last videos (rerun with --rank/--world-size)")
