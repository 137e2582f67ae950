"""`svd curate text`: share of the frame covered by text, per clip (parse and dispatch only)."""
from __future__ import annotations

from pathlib import Path

import typer

from svdcli.cli.common import check_rank, console, print_stage_result, user_errors
from svdcli.cli.curate_cmds.options import (
    Device, ExecutorName, Manifest, MaxErrorRate, Out, Progress, RayAddress, Rank, Workers, WorldSize)
from svdcli.cli.curate_cmds.progress import stage_bars

HELP = """Score how much of every ok clip is covered by text (captions, titles, watermarks, slides).

text_area = max over the sampled frames of (area of the union of detected text boxes / frame area), 0..1; by default the first, middle and last frame are sampled (--frames 1fps samples at a fixed rate). The paper drops clips above 0.07 (`svd curate filter`); this command only scores, --max-area only sets the count in the summary.

Detectors: `craft` (easyocr's CRAFT, the paper's; needs craft_mlt_25k.pth in --model-dir, $SVD_EASYOCR_DIR or ~/.EasyOCR/model) or `dbnet` (PP-OCRv4 DBNet whose weights ship inside rapidocr-onnxruntime: works offline). `auto` uses CRAFT when its weights are present, else DBNet; the manifest records which one ran in `text_detector`.

Resumes after an interruption; a clip that cannot be read gets a `text_error` instead of stopping the run."""


def register(app: typer.Typer) -> None:
    @app.command("text", help=HELP)
    @user_errors
    def text(
        manifest: Manifest,
        out: Out = None,
        max_area: float = typer.Option(0.07, min=0.0, max=1.0, help="Only for the summary: count clips above it."),
        detector: str = typer.Option("auto", help="auto | craft | dbnet."),
        model_dir: Path = typer.Option(None, help="Folder with craft_mlt_25k.pth (else $SVD_EASYOCR_DIR, "
                                                  "~/.EasyOCR/model)."),
        frames: str = typer.Option("fml", help="'fml' = first, middle, last frame; or a rate such as '1fps'."),
        size: int = typer.Option(640, min=64, help="Long side of the analysis frames, pixels."),
        batch_size: int = typer.Option(0, min=0, help="Frames per detector batch; 0 = 16 on GPU, 1 on CPU "
                                                      "(where batching is not faster)."),
        device: Device = "auto",
        workers: Workers = 1,
        rank: Rank = 0,
        world_size: WorldSize = 1,
        executor: ExecutorName = "local",
        ray_address: RayAddress = "auto",
        progress: Progress = True,
        max_error_rate: MaxErrorRate = 1.0,
    ) -> None:
        from svdcli.curate.stages.text import resolve_detector, run_text, summarize

        from svdcli.curate.executors import executor_for

        check_rank(rank, world_size)
        model_dir = str(model_dir) if model_dir else None
        console().print(f"text detector: {resolve_detector(detector, model_dir)}")
        result, written = run_text(manifest, out, workers=workers, rank=rank, world_size=world_size,
            executor=executor_for(executor, ray_address),
                                   progress=stage_bars(progress), detector=detector, model_dir=model_dir, frames=frames,
                                   size=size, batch_size=batch_size, device=device)
        print_stage_result("text", result, written, lambda w: summarize(w, max_area), max_error_rate)
