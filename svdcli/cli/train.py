"""`svd train`: train one training stage of a model family with DeepSpeed; see docs/training.md."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from svdcli.cli.common import user_errors

HELP = """Train a model family (default svd: the latent video diffusion model) with DeepSpeed, one
training stage at a time (training stages, not the curation stages of `svd curate`).

\b
SVD training stages (recipes in pipelines/train/):
  image     the spatial image model on single frames (T=1, image_only_indicator=1)
  video     video pretraining, 14 frames at 256x384, EDM noise; --init an image checkpoint
  finetune  higher resolution, noise shifted to P_mean/P_std, lower lr, EMA
  multiview SVD-MV: orbits from `svd render orbits`, conditioned on the camera elevation
\b
Other families (--family NAME, recipes in pipelines/train/NAME/; docs/families.md):
  video_ldm  video | predict | interpolate | decoder (the VAE's temporal decoder finetune)
  vdm        video (pixel space, joint image-video training)
  Tune-A-Video's one-shot tuning is `svd tune`.
\b
Single CPU process (gloo, for development):
  svd train --stage video --config pipelines/train/video.yaml --data shards/ --out runs/v1 --set model=tiny
Several GPUs / nodes (see docs/training.md for the hostfile):
  deepspeed --hostfile hostfile --no_local_rank --module svdcli train --stage video --config ... \\
      --data shards/ --out runs/v1 --deepspeed pipelines/deepspeed/zero2.json
\b
Writes RUN_DIR/config.yaml, log.jsonl, tb/ (TensorBoard), summary.json and
checkpoints/step_NNNNNN/ (DeepSpeed state + ema.safetensors). --resume continues exactly.
"""


def register(app: typer.Typer) -> None:
    """Add `svd train` to the root app."""

    @app.command("train", help=HELP, no_args_is_help=True)
    @user_errors
    def train_cmd(
        stage: str = typer.Option(..., "--stage", help="Training stage to run (svd: image, video, finetune or multiview)."),
        family: Optional[str] = typer.Option(
            None, "--family", help="Model family to train (default: the config's `family`, else svd)."),
        data: Path = typer.Option(..., "--data", help="Shard folder written by `svd pack` (or one .tar)."),
        out: Path = typer.Option(..., "--out", help="Run dir: config, logs, checkpoints."),
        config: Optional[Path] = typer.Option(
            None, "--config", help="Stage recipe, e.g. pipelines/train/video.yaml (optional with --resume)."),
        deepspeed: Optional[Path] = typer.Option(
            None, "--deepspeed", help="DeepSpeed JSON (ZeRO stage, bucket sizes): pipelines/deepspeed/zero{1,2,3}.json. "
                                      "Batch size, precision and clipping come from --config."),
        init: Optional[Path] = typer.Option(
            None, "--init", help="Initial weights: our ema.safetensors, a run dir, or (svd) an official SVD or SD 2.1 "
                                 "file. Temporal layers missing from an image checkpoint start fresh (inflation)."),
        resume: bool = typer.Option(False, "--resume", help="Continue RUN_DIR from its latest checkpoint, exactly."),
        steps: Optional[int] = typer.Option(None, "--steps", help="Override the number of optimizer steps."),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override a config key, e.g. --set optim.lr=3e-5 --set data.batch_size=4 (repeatable)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with ETA."),
        tensorboard: bool = typer.Option(True, "--tensorboard/--no-tensorboard", help="Also log TensorBoard scalars."),
        stop_timeout: float = typer.Option(
            25.0, "--stop-timeout", min=1.0, help="On SIGTERM (a scheduler ending the job) finish the step, save a "
            "checkpoint and exit 143, all within this many seconds (else exit without it; --resume takes the last "
            "complete one). Keep it under the scheduler's grace period (SLURM KillWait, Kubernetes' "
            "terminationGracePeriodSeconds: 30 s by default)."),
    ) -> None:
        from svdcli.train.loop import TrainOptions, train

        sets = list(overrides) + ([f"steps={steps}"] if steps is not None else [])
        opts = TrainOptions(stage=stage, config=config, data=data, out=out, deepspeed=deepspeed,
                          init=init, family=family, resume=resume, overrides=tuple(sets),
                          tensorboard=tensorboard, progress=progress, stop_timeout=stop_timeout)
        summary = train(opts)
        if summary["rank"] == 0:
            from svdcli.cli.common import console

            console().print(f"done: {summary['steps']} steps; checkpoint {summary['checkpoint']}"
                            + (f"; {summary['skipped_shards']} shard(s) skipped" if summary["skipped_shards"] else "")
                            + (f"; {summary['skipped_samples']} bad sample(s) skipped (see the warnings)"
                               if summary["skipped_samples"] else ""))
        if summary["world_size"] > 1:  # a launcher's process: end the group before exit, so gloo's
            import torch.distributed as dist  # threads are not torn down mid-run (SIGABRT at exit)

            dist.barrier()
            dist.destroy_process_group()
