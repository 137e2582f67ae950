"""`svd curate motion`: Farneback motion score per clip (parse and dispatch only)."""
from __future__ import annotations

import typer

from svdcli.cli.common import check_rank, print_stage_result, user_errors
from svdcli.cli.curate_cmds.options import (ExecutorName, Manifest, MaxErrorRate, Out, Progress, RayAddress, Rank,
                                            Workers, WorldSize)
from svdcli.cli.curate_cmds.progress import stage_bars

HELP = """Score the motion of every ok clip: dense Farneback optical flow on frame pairs (1/15 s apart) sampled at 2 fps inside the clip, at a fixed analysis size (long side 256 px, aspect kept), so scores compare across videos of any size.

motion_score = median over pairs of the mean flow magnitude, in analysis pixels per 1/15 s (= pixels per 30 fps frame at a 512 px long side). Static shots score about 0-0.1; the paper's recipe drops clips below 0.25 (`svd curate filter --rule 'motion_score >= 0.25'`). This command only scores.

Resumes after an interruption; a clip that cannot be read gets a `motion_error` instead of stopping the run.

To save the second decode, score motion while finding the clips: `svd curate cuts ... --motion-out M2` (same scores), as `svd curate run` does when motion follows cuts."""


def register(app: typer.Typer) -> None:
    @app.command("motion", help=HELP)
    @user_errors
    def motion(
        manifest: Manifest,
        out: Out = None,
        threshold: float = typer.Option(0.25, help="Only for the summary: how many clips score below it (static)."),
        workers: Workers = 1,
        rank: Rank = 0,
        world_size: WorldSize = 1,
        executor: ExecutorName = "local",
        ray_address: RayAddress = "auto",
        progress: Progress = True,
        max_error_rate: MaxErrorRate = 1.0,
    ) -> None:
        from svdcli.curate.stages.motion import run_motion, summarize

        from svdcli.curate.executors import executor_for

        check_rank(rank, world_size)
        result, written = run_motion(manifest, out, workers=workers, rank=rank, world_size=world_size,
            executor=executor_for(executor, ray_address),
                                     progress=stage_bars(progress))
        print_stage_result("motion", result, written, lambda w: summarize(w, threshold), max_error_rate)
