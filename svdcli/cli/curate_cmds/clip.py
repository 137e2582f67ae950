"""`svd curate clip`: CLIP embeddings, aesthetic and CLIP scores per clip (parse and dispatch only)."""
from __future__ import annotations

from pathlib import Path

import typer

from svdcli.cli.common import check_rank, print_stage_result, user_errors
from svdcli.cli.curate_cmds.options import (
    Device, ExecutorName, Manifest, MaxErrorRate, ModelBatchSize, Out, Pretrained, Progress, RayAddress, Rank, Workers,
    WorldSize)
from svdcli.cli.curate_cmds.progress import stage_bars

HELP = """Embed the first, middle and last frame of every ok clip with an open_clip image tower and score them.

aesthetic_score: a LAION aesthetic head on the L2-normalised embeddings, mean over the 3 frames (the default `laion-mlp` is the improved predictor, ~1-10, on ViT-L-14 'openai'). clip_score: cosine between each frame embedding and the clip's caption embedding, mean over frames; needs a `caption` column (run `svd curate caption` first), else it stays empty.

The embeddings go to <out>.clip_embeddings.parquet (one row per clip and frame: clip_id, frame, time, embedding) for deduplication.

Weights: --pretrained is an open_clip tag (looked up in the Hugging Face cache, downloaded when online) or a checkpoint file. Aesthetic heads are looked up in --weights-dir / $SVD_WEIGHTS_DIR / ~/.cache/svdcli/weights, or given as a path. A missing file stops the run with what to download and where to put it. bf16 on GPU.

Resumes after an interruption; a clip that cannot be read gets a `clip_error` instead of stopping the run."""


def register(app: typer.Typer) -> None:
    @app.command("clip", help=HELP)
    @user_errors
    def clip(
        manifest: Manifest,
        out: Out = None,
        model: str = typer.Option("ViT-L-14", help="open_clip model name, or a model-config .json."),
        pretrained: Pretrained = "openai",
        aesthetic: str = typer.Option("laion-mlp", help="laion-mlp | laion-linear-l14 | laion-linear-b32 | "
                                                        "PATH | hf-hub:REPO/FILE | none."),
        weights_dir: Path = typer.Option(None, help="Folder with the aesthetic heads (else $SVD_WEIGHTS_DIR, "
                                                    "~/.cache/svdcli/weights)."),
        batch_size: ModelBatchSize = 16,
        device: Device = "auto",
        workers: Workers = 1,
        rank: Rank = 0,
        world_size: WorldSize = 1,
        executor: ExecutorName = "local",
        ray_address: RayAddress = "auto",
        progress: Progress = True,
        max_error_rate: MaxErrorRate = 1.0,
    ) -> None:
        from svdcli.curate.stages.clip import run_clip, summarize

        from svdcli.curate.executors import executor_for

        check_rank(rank, world_size)
        result, written = run_clip(manifest, out, workers=workers, rank=rank, world_size=world_size,
            executor=executor_for(executor, ray_address),
                                   progress=stage_bars(progress), model=model, pretrained=pretrained,
                                   aesthetic=aesthetic, weights_dir=str(weights_dir) if weights_dir else None,
                                   batch_size=batch_size, device=device)
        print_stage_result("clip", result, written, summarize, max_error_rate)
