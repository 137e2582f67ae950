"""`svd curate caption`: CoCa captions of each clip's middle frame (parse and dispatch only)."""
from __future__ import annotations

import typer

from svdcli.cli.common import check_rank, print_stage_result, user_errors
from svdcli.cli.curate_cmds.options import (
    Device, ExecutorName, Manifest, MaxErrorRate, ModelBatchSize, Out, Pretrained, Progress, RayAddress, Rank, Workers,
    WorldSize)
from svdcli.cli.curate_cmds.progress import stage_bars

HELP = """Caption the middle frame of every ok clip with CoCa through open_clip; writes `caption` and `caption_model`.

Decoding: beam search by default (deterministic); --generation top_k / top_p sample, seeded with --seed per batch (--generation top_k --top-k 1 is greedy). --pretrained is an open_clip tag (Hugging Face cache, downloaded when online) or a checkpoint file; a missing one stops the run with what to download. bf16 on GPU.

Resumes after an interruption; a clip that cannot be read gets a `caption_error` instead of stopping the run."""


def register(app: typer.Typer) -> None:
    @app.command("caption", help=HELP)
    @user_errors
    def caption(
        manifest: Manifest,
        out: Out = None,
        model: str = typer.Option("coca_ViT-L-14", help="open_clip CoCa model name, or a model-config .json."),
        pretrained: Pretrained = "mscoco_finetuned_laion2b_s13b_b90k",
        generation: str = typer.Option("beam_search", help="beam_search | top_k | top_p."),
        seq_len: int = typer.Option(30, min=2, help="Maximum caption length in tokens."),
        min_seq_len: int = typer.Option(5, min=1, help="Minimum caption length in tokens."),
        num_beams: int = typer.Option(6, min=1, help="Beams (beam_search)."),
        num_beam_groups: int = typer.Option(3, min=1, help="Diverse beam groups (beam_search)."),
        top_k: int = typer.Option(1, min=1, help="Keep the k most likely tokens (top_k)."),
        top_p: float = typer.Option(0.1, min=0.0, max=1.0, help="Nucleus mass (top_p)."),
        temperature: float = typer.Option(1.0, min=0.0, help="Sampling temperature (top_k, top_p)."),
        repetition_penalty: float = typer.Option(1.0, min=0.0, help="Penalty for repeated tokens."),
        seed: int = typer.Option(0, help="Seed for the sampling decoders."),
        batch_size: ModelBatchSize = 8,
        device: Device = "auto",
        workers: Workers = 1,
        rank: Rank = 0,
        world_size: WorldSize = 1,
        executor: ExecutorName = "local",
        ray_address: RayAddress = "auto",
        progress: Progress = True,
        max_error_rate: MaxErrorRate = 1.0,
    ) -> None:
        from svdcli.curate.stages.caption import run_caption, summarize

        from svdcli.curate.executors import executor_for

        check_rank(rank, world_size)
        result, written = run_caption(
            manifest, out, workers=workers, rank=rank, world_size=world_size,
            executor=executor_for(executor, ray_address), progress=stage_bars(progress),
            model=model, pretrained=pretrained, generation=generation, seq_len=seq_len, min_seq_len=min_seq_len,
            num_beams=num_beams, num_beam_groups=num_beam_groups, top_k=top_k, top_p=top_p,
            temperature=temperature, repetition_penalty=repetition_penalty, seed=seed,
            batch_size=batch_size, device=device)
        print_stage_result("caption", result, written, summarize, max_error_rate)
