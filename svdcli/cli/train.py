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
\b
Know before launching (docs/training.md, "Which GPU for which run"):
  svd train --stage finetune --config pipelines/train/finetune.yaml --deepspeed pipelines/deepspeed/zero2.json \\
      --plan --gpus 8 --gpu-memory 80
prints the per-GPU peak memory (parameters, gradients, optimizer states, EMA, activations, frozen
encoders) and FLOPs per step, traced from the real network at the run's shapes without
allocating it, and the cheapest change that fits. On a GPU, svd train refuses a run whose plan
does not fit the visible GPU (--force starts it anyway).
"""


def register(app: typer.Typer) -> None:
    """Add `svd train` to the root app."""

    @app.command("train", help=HELP, no_args_is_help=True)
    @user_errors
    def train_cmd(
        stage: str = typer.Option(..., "--stage", help="Training stage to run (svd: image, video, finetune or multiview)."),
        family: Optional[str] = typer.Option(
            None, "--family", help="Model family to train (default: the config's `family`, else svd)."),
        data: Optional[Path] = typer.Option(
            None, "--data", help="Shard folder written by `svd pack` (or one .tar). Required, except with --plan."),
        out: Optional[Path] = typer.Option(
            None, "--out", help="Run dir: config, logs, checkpoints. Required, except with --plan."),
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
        plan: bool = typer.Option(
            False, "--plan", help="Print the run's per-GPU memory and FLOPs plan and whether it fits; train nothing."),
        gpus: Optional[int] = typer.Option(
            None, "--gpus", min=1, help="With --plan: data-parallel GPUs to plan for (default: the launch's "
                                        "WORLD_SIZE, else 1)."),
        gpu_memory: Optional[float] = typer.Option(
            None, "--gpu-memory", min=1.0, help="With --plan: memory of each GPU in GiB, e.g. 24, 80 (default: "
                                                 "the visible GPU's; none: common sizes are listed)."),
        force: bool = typer.Option(
            False, "--force", help="Start even when the plan says the run cannot fit the visible GPU."),
    ) -> None:
        from svdcli.train.loop import TrainOptions, train

        sets = list(overrides) + ([f"steps={steps}"] if steps is not None else [])
        if not plan:
            for flag, value in (("--data", data), ("--out", out)):
                if value is None:
                    raise typer.BadParameter(f"{flag} is required (except with --plan)", param_hint=flag)
        opts = TrainOptions(stage=stage, config=config, data=data, out=out if out is not None else Path("."),
                          deepspeed=deepspeed, init=init, family=family, resume=resume, overrides=tuple(sets),
                          tensorboard=tensorboard, progress=progress, force=force,
                          stop_timeout=stop_timeout)
        if plan:
            _print_plan(opts, gpus, gpu_memory)
            return
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


def _print_plan(opts, gpus: int | None, gpu_memory: float | None) -> None:
    """`svd train --plan`: the plan of the run these options describe, and what fits."""
    import os

    from svdcli.cli.common import console
    from svdcli.errors import SvdError
    from svdcli.train.engine import load_ds_config
    from svdcli.train.loop import resolve_config
    from svdcli.train.plan.check import visible_gpu
    from svdcli.train.plan.fit import cheapest_fit
    from svdcli.train.plan.plan import Target, make_plan
    from svdcli.train.plan.report import gib, render

    if opts.resume and opts.out == Path("."):
        raise SvdError("--plan --resume: pass --out RUN_DIR, the run whose saved config to plan")
    cfg = resolve_config(opts)
    gpus = gpus or int(os.environ.get("WORLD_SIZE", "1"))
    if gpu_memory is None and (gpu := visible_gpu(int(os.environ.get("LOCAL_RANK", "0")))) is not None:
        gpu_memory = gpu[1]
    ds = load_ds_config(opts.deepspeed, cfg, gpus)
    out = console()
    with out.status("tracing one training step of the real network at the run's shapes (meta device)..."):
        plan = make_plan(cfg, ds, gpus, compare_checkpointing=True)
    target = Target(gpus, gpu_memory)
    for line in render(plan, target):
        typer.echo(line)
    if gpu_memory is not None and not plan.fits(target):
        with out.status("looking for the cheapest change that fits..."):
            fit = cheapest_fit(cfg, ds, target)
        if fit is None:
            typer.echo("no change that keeps the experiment fits: more GPUs with ZeRO-3, fewer frames, a lower "
                       "resolution, temporal-only (freeze_spatial) or LoRA training")
        else:
            typer.echo(f"cheapest change that fits: {fit.flags()} -> {gib(fit.plan.peak)} GiB per GPU")
            for change in fit.changes:
                typer.echo(f"  {change.name}: {change.cost}")
