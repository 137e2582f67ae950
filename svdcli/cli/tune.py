"""`svd tune`: Tune-A-Video one-shot tuning of an image model on one text-video pair.

The clip is packed into a one-video shard folder in the run dir (`svd pack`'s code), and the
`tune` stage of the tune_a_video family runs through `svd train`'s engine (DeepSpeed, logs,
--resume). The export is a delta file of the tuned tensors tied to the base's sha256.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from svdcli.cli.common import user_errors

HELP = (
    "One-shot tuning (Tune-A-Video, Wu et al. 2023) of a text-to-image model on one video.\n\n"
    "Inflates --base (a `svd train --stage image` export or run dir, or an SD 2.1 .safetensors) into a "
    "video model with sparse-causal spatio-temporal attention and temporal attention, then trains only "
    "the attention query projections and the temporal attention on the clip and its --prompt:\n\n"
    "\b\n"
    "  svd tune --video clip.mp4 --prompt \"a man is skiing\" --base v2-1_768-ema-pruned.safetensors --out runs/ski\n"
    "  svd sample --family tune_a_video --checkpoint v2-1_768-ema-pruned.safetensors --tuned runs/ski \\\n"
    "      --prompt \"a panda is skiing\" --invert clip.mp4 --out panda.mp4\n\n"
    "Defaults are the official code's (showlab/Tune-A-Video configs): 24 frames taking every 2nd frame of "
    "the clip (--frame-stride), 512x512, 500 AdamW steps at lr 3e-5 with weight decay 1e-2 and gradient "
    "clipping 1.0; `svd sample` then edits with 50 DDIM steps and guidance --cfg 12.5.\n\n"
    "Writes RUN/data/ (the packed clip), RUN/tune.yaml, and what `svd train` writes (config.yaml, "
    "log.jsonl, checkpoints/step_N/ema.safetensors = the delta file). EMA is off.")


WEIGHT_DECAY = 1e-2   # the official train_tuneavideo.py's adam_weight_decay (betas, eps, clipping: ours = theirs)


def tune_recipe(base: Path, prompt: str, frames: int, size: int, steps: int, lr: float, seed: int,
                precision: str, frame_stride: int = 2) -> dict:
    """The `tune` stage's recipe (the official defaults: 24 frames, every 2nd, 512x512, 500 steps, lr 3e-5)."""
    return {"family": "tune_a_video", "stage": "tune", "base": str(base), "prompt": prompt, "steps": steps,
            "frame_stride": frame_stride,
            "seed": seed, "precision": precision, "activation_checkpointing": False, "log_every": 10,
            "checkpoint_every": steps, "keep_checkpoints": 1,
            "optim": {"lr": lr, "warmup_steps": 0, "weight_decay": WEIGHT_DECAY, "grad_clip": 1.0},
            "ema": {"enabled": False},
            "data": {"frames": frames, "height": size, "width": size, "batch_size": 1, "grad_accum": 1,
                     "num_workers": 0, "shuffle_buffer": 1, "posterior": "sample"}}


def pack_clip(video: Path, prompt: str, frames: int, size: int, folder: Path, stride: int = 1) -> Path:
    """Frames 0, stride, 2 stride, ... (`frames` of them) of the clip, resized and centre-cropped to
    size x size, as one shard (sampled at fps / stride: the frame shown at each time is that frame)."""
    from svdcli.errors import SvdError
    from svdcli.manifest.io import table_from_rows, write_manifest
    from svdcli.shards.pack import PackConfig, run_pack
    from svdcli.video.probe import probe, video_id

    if not video.is_file():
        raise SvdError(f"--video {video}: no such file")
    info = probe(video)
    n = info.frames or int(round(info.duration * info.fps))
    needed = (frames - 1) * stride + 1
    if n < needed:
        raise SvdError(f"--video {video} has {n} frames; --frames {frames} at --frame-stride {stride} "
                       f"needs {needed}")
    folder.mkdir(parents=True, exist_ok=True)
    row = dict(clip_id=f"{video_id(video)}_0_{frames}", video_id=video_id(video), video_path=str(video.resolve()),
               start_time=0.0, end_time=n / info.fps, start_frame=0, end_frame=n, num_frames=n, fps=info.fps,
               width=info.width, height=info.height, status="ok", motion_score=0.0, caption=prompt, keep=True,
               drop_reason=None)
    manifest = write_manifest(table_from_rows([row], list(row)), folder / "clip.parquet")
    cfg = PackConfig(size=(size, size), frames=frames, min_frames=frames, fps=info.fps / stride if stride > 1 else None,
                     shard_size=1, format="npy")
    run_pack(manifest, folder / "shards", cfg, workers=1, progress=False)
    return folder / "shards"


def register(app: typer.Typer) -> None:
    @app.command("tune", help=HELP, no_args_is_help=True)
    @user_errors
    def tune(
        video: Path = typer.Option(..., "--video", help="The source clip (mp4, ...)."),
        prompt: str = typer.Option(..., "--prompt", "-p", help="Text describing the clip, e.g. 'a man is skiing'."),
        base: Path = typer.Option(..., "--base", help="Image model: `svd train --stage image` export / run dir, or SD 2.1 .safetensors."),
        out: Path = typer.Option(..., "--out", help="Run dir (data, config, logs, the delta file)."),
        frames: int = typer.Option(24, "--frames", min=2, help="Frames of the clip to tune on."),
        frame_stride: int = typer.Option(2, "--frame-stride", min=1, help="Take every n-th frame of the clip (official: 2); `svd sample --invert` reads the clip the same way."),
        size: int = typer.Option(512, "--size", min=64, help="Square frame size, multiple of 64."),
        steps: int = typer.Option(500, "--steps", min=1, help="Optimizer steps."),
        lr: float = typer.Option(3e-5, "--lr", help="Learning rate (AdamW, weight decay 1e-2; --set optim.weight_decay=... changes it)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the noise draws and of the new layers."),
        deepspeed: Optional[Path] = typer.Option(None, "--deepspeed", help="DeepSpeed JSON, as for `svd train`."),
        resume: bool = typer.Option(False, "--resume", help="Continue RUN from its latest checkpoint."),
        overrides: list[str] = typer.Option([], "--set", help="Override a config key (e.g. --set prediction=eps, --set text=tiny)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        tensorboard: bool = typer.Option(False, "--tensorboard/--no-tensorboard", help="Also log TensorBoard scalars."),
    ) -> None:
        import json

        import torch

        from svdcli.cli.common import console
        from svdcli.train.loop import TrainOptions, train

        from svdcli.errors import SvdError

        if any(o.split("=", 1)[0].strip() == "frame_stride" for o in overrides):
            raise SvdError("give the stride as --frame-stride (the clip is packed before training), not --set frame_stride")
        recipe = out / "tune.yaml"
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            precision = "bf16" if torch.cuda.is_available() else "fp32"
            recipe.write_text(json.dumps(tune_recipe(base.resolve(), prompt, frames, size, steps, lr, seed, precision,
                                                     frame_stride), indent=1))  # JSON is YAML
            shards = pack_clip(video, prompt, frames, size, out / "data", frame_stride)
        else:
            shards = out / "data" / "shards"
        opts = TrainOptions(stage="tune", family="tune_a_video", config=recipe, data=shards, out=out,
                          deepspeed=deepspeed, resume=resume, overrides=tuple(overrides),
                          tensorboard=tensorboard, progress=progress)
        summary = train(opts)
        if summary["rank"] == 0:
            console().print(f"done: {summary['steps']} steps; tuned weights "
                            f"{Path(summary['checkpoint']) / 'ema.safetensors'}")
