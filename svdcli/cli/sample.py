"""`svd sample`: a video from a checkpoint of any model family (parse and dispatch only)."""
from __future__ import annotations

from pathlib import Path

import typer

from svdcli.cli.common import console, user_errors

HELP = (
    "Generate a video from a conditioning image, as the official SVD sampler does: Karras noise "
    "levels, deterministic Euler steps (--sampler heun for Heun), classifier-free guidance rising "
    "linearly from --min-cfg on the first frame to --max-cfg on the last (conditional and "
    "unconditional branches in one batched pass), then temporal VAE decoding --decode-chunk "
    "frames at a time.\n\n"
    "Checkpoints: the official svd / svd_xt single .safetensors files, a diffusers folder, our "
    "own single file, or a `svd train` run folder of any model family (detected from the "
    "checkpoint; --family forces one). --fps-id, --motion-bucket, --cond-aug, --decode-chunk "
    "and --model are SVD options. Frames, steps and guidance default to the "
    "checkpoint's model (svd: 14 frames, 25 steps, cfg 1.0->2.5; svd_xt: 25 frames, 30 steps, "
    "cfg 1.5->3.0; our own: what it was trained with).\n\n"
    "The image is resized and centre-cropped to the model's size (svd: 1024x576) and the command "
    "says when it does. Writes an mp4 (or a gif, or a folder of png frames: --format or the --out "
    "suffix) and prints how long each phase took. The same --seed gives the same video (the noise is "
    "drawn on the CPU, so devices differ only by rounding).")

MISSING_CHECKPOINT = (
    "no --checkpoint given. Official weights: download svd.safetensors from "
    "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid (or svd_xt.safetensors "
    "from .../stable-video-diffusion-img2vid-xt) and pass --checkpoint PATH; or run `make demo`, "
    "which trains a small model in demo/run: `svd sample --image demo/cond.png --checkpoint demo/run`.")


def register(app: typer.Typer) -> None:
    @app.command("sample", help=HELP, no_args_is_help=True)
    @user_errors
    def sample(
        image: Path = typer.Option(None, "--image", "-i", help="Conditioning image (png, jpg, webp...)."),
        checkpoint: Path = typer.Option(None, "--checkpoint", "-c", help="Model: official .safetensors, diffusers folder, our own checkpoint, or a `svd train` run folder."),
        out: Path = typer.Option(Path("out.mp4"), "--out", "-o", help="Output .mp4 / .gif, or a folder for png frames."),
        fmt: str = typer.Option(None, "--format", help="mp4, gif or png (default: from --out)."),
        family: str = typer.Option(None, "--family", help="Model family of the checkpoint (default: detected from it; svd for official files)."),
        model: str = typer.Option(None, "--model", help="svd or svd_xt: whose defaults to use (default: from the checkpoint's name and metadata)."),
        frames: int = typer.Option(None, "--frames", min=1, help="Frames to generate (default: the model's)."),
        steps: int = typer.Option(None, "--steps", min=1, help="Sampling steps (default: the model's)."),
        min_cfg: float = typer.Option(None, "--min-cfg", help="Guidance scale on the first frame."),
        max_cfg: float = typer.Option(None, "--max-cfg", help="Guidance scale on the last frame."),
        fps_id: int = typer.Option(None, "--fps-id", min=0, help="SVD frame-rate conditioning (the output plays at fps-id + 1; default 6)."),
        motion_bucket: int = typer.Option(None, "--motion-bucket", min=0, help="SVD motion conditioning, 0-255: higher moves more (default 127)."),
        cond_aug: float = typer.Option(None, "--cond-aug", min=0.0, help="SVD: noise added to the conditioning image (default 0.02)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the initial noise and the conditioning noise."),
        sampler: str = typer.Option(None, "--sampler", help="euler (as the official sampler) or heun (2x the network calls); default: the family's."),
        decode_chunk: int = typer.Option(None, "--decode-chunk", min=1, help="Frames decoded per VAE call (default: 14); lower it to save memory."),
        width: int = typer.Option(None, "--width", help="Output width, multiple of 64 (default: the model's)."),
        height: int = typer.Option(None, "--height", help="Output height, multiple of 64 (default: the model's)."),
        prompt: str = typer.Option(None, "--prompt", "-p", help="Text prompt, for a text-conditioned checkpoint."),
        device: str = typer.Option(None, "--device", help="cuda, cuda:1, cpu (default: cuda when available)."),
        dtype: str = typer.Option("auto", "--dtype", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    ) -> None:
        from svdcli.cli.common import step_bar
        from svdcli.errors import SvdError

        if checkpoint is None:
            raise SvdError(MISSING_CHECKPOINT)
        from svdcli.sample.pipeline import SampleOptions, sample_to_file

        # family options go only when given: the checkpoint's family knows its defaults
        given = {"fps_id": fps_id, "motion_bucket_id": motion_bucket, "cond_aug": cond_aug, "prompt": prompt,
                 "decode_chunk": decode_chunk, "model": model}
        options = SampleOptions(frames=frames, steps=steps, min_cfg=min_cfg, max_cfg=max_cfg, seed=seed,
                                sampler=sampler, width=width, height=height,
                                **{k: v for k, v in given.items() if v is not None})
        con = console()
        result = sample_to_file(checkpoint, image, out, options, fmt=fmt, family=family, device=device,
                                dtype=dtype, progress=step_bar if progress else None, log=con.print)
        phases = ", ".join(f"{name} {sec:.1f} s" for name, sec in result.timings.items())
        con.print(f"wrote {result.path} ({result.num_frames} frames {result.width}x{result.height} "
                  f"at {result.fps:g} fps); {phases}")
