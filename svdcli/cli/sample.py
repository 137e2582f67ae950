"""`svd sample`: a video from a checkpoint of any model family (parse and dispatch only)."""
from __future__ import annotations

from pathlib import Path

import typer

from svdcli.cli.common import console, lora_pairs, user_errors

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
    "drawn on the CPU, so devices differ only by rounding).\n\n"
    "Other families (docs/families.md): video_ldm (text-to-video; --long, --interpolate, --upsample), vdm "
    "(pixel space; --extend / --upsample with reconstruction guidance; --cfg W is the paper's w + 1), "
    "tune_a_video (--tuned, --invert; cfg 12.5 and 50 DDIM steps by default, as its official code). "
    "An option a checkpoint's family does not take is refused, naming the ones it does.\n\n"
    "Multi-view (SVD-MV, `svd train --stage multiview`): --multiview --elevation DEG writes the views "
    "of an orbit around the object in --image to the --out folder, with a turntable mp4.")

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
        s_churn: float = typer.Option(0.0, "--s-churn", min=0.0, help="EDM's stochastic churn S_churn (Karras et al. 2022, Alg. 2) in --sampler euler / heun: each step inside [--s-tmin, --s-tmax] first adds noise that raises sigma by a factor 1 + min(S_churn / steps, sqrt(2) - 1), drawn from --seed; 0 (default) is the deterministic sampler. svd checkpoints."),
        s_tmin: float = typer.Option(0.0, "--s-tmin", min=0.0, help="Lowest sigma that churns (EDM S_tmin; default 0)."),
        s_tmax: float = typer.Option(float("inf"), "--s-tmax", min=0.0, help="Highest sigma that churns (EDM S_tmax; default: every step)."),
        s_noise: float = typer.Option(1.0, "--s-noise", min=0.0, help="Scale of the churn noise (EDM S_noise; default 1; EDM used 1.003-1.007)."),
        decode_chunk: int = typer.Option(None, "--decode-chunk", min=1, help="Frames decoded per VAE call (default: 14); lower it to save memory."),
        width: int = typer.Option(None, "--width", help="Output width, multiple of 64 (default: the model's)."),
        height: int = typer.Option(None, "--height", help="Output height, multiple of 64 (default: the model's)."),
        prompt: str = typer.Option(None, "--prompt", "-p", help="Text prompt, for a text-conditioned checkpoint."),
        cfg: float = typer.Option(None, "--cfg", help="One guidance scale W for every frame (sets --min-cfg and --max-cfg): D_uncond + W (D_cond - D_uncond), so 1 is no guidance (papers writing (1 + w) x_c - w x_u, as VDM's, mean W = w + 1)."),
        temporal_prompt: str = typer.Option(None, "--temporal-prompt", help="Text for the temporal cross-attention layers only (default: --prompt); SVD paper sec. 6.4."),
        lora: list[Path] = typer.Option([], "--lora", help="LoRA file from `svd train ... --set lora.rank=16` to apply (repeatable)."),
        lora_scale: list[float] = typer.Option([], "--lora-scale", help="Strength of each --lora, in order (default 1.0; 0 = the base model)."),
        input_video: Path = typer.Option(None, "--input", help="Input video for --extend, --upsample or --interpolate."),
        long: bool = typer.Option(False, "--long", help="video_ldm: generate --frames chunk after chunk, each conditioned on the last frames of the one before."),
        context_frames: int = typer.Option(None, "--context-frames", min=0, help="video_ldm --long: frames of context carried into the next chunk."),
        context_guidance: float = typer.Option(None, "--context-guidance", help="video_ldm --long: classifier-free guidance scale on the context frames (0 ignores them, 1 = conditional)."),
        interpolate: int = typer.Option(None, "--interpolate", min=2, help="video_ldm: temporal interpolation factor (4: T keyframes -> 4T-3 frames; 16 = two passes)."),
        extend: int = typer.Option(None, "--extend", min=1, help="vdm: generate this many frames after the end of --input."),
        upsample: int = typer.Option(None, "--upsample", min=2, help="Spatial super-resolution factor of --input: vdm (reconstruction guidance); video_ldm (a `--stage upsample` model, 4)."),
        noise_level: int = typer.Option(None, "--noise-level", min=0, help="video_ldm --upsample: noise-augmentation level of the low-resolution input, 0-349 (default 20; higher trusts the input less)."),
        guidance_weight: float = typer.Option(None, "--guidance-weight", min=0.0, help="vdm: reconstruction guidance weight w_r (0 = unconditional)."),
        conditioning: str = typer.Option(None, "--conditioning", help="vdm: reconstruction (default) or replacement (the baseline)."),
        tuned: Path = typer.Option(None, "--tuned", help="tune_a_video: a `svd tune` run folder (or its delta file) applied to --checkpoint."),
        invert: Path = typer.Option(None, "--invert", help="tune_a_video: start from the DDIM inversion of this video (default: random noise)."),
        multiview: bool = typer.Option(False, "--multiview", help="A multi-view checkpoint (`svd train --stage multiview`, SVD-MV): write its frames as the views of an orbit around the object in --image: OUT/views/NNN.png, OUT/turntable.mp4 and OUT/views.json (--out is a folder)."),
        elevation: float = typer.Option(None, "--elevation", help="Multi-view checkpoints: the camera elevation of --image in degrees (the views come out at that elevation)."),
        vae: Path = typer.Option(None, "--vae", help="Decode with this VAE instead of the checkpoint's: a `svd train --family video_ldm --stage decoder` export or run folder, an official SVD file, or an SD 2.1 file (its image VAE inflated)."),
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
        loras = lora_pairs(lora, lora_scale, "--lora")
        if cfg is not None:
            if min_cfg is not None or max_cfg is not None:
                raise SvdError("--cfg sets both --min-cfg and --max-cfg: give either --cfg or those two")
            min_cfg = max_cfg = cfg
        given = {"fps_id": fps_id, "motion_bucket_id": motion_bucket, "cond_aug": cond_aug, "prompt": prompt,
                 "decode_chunk": decode_chunk, "model": model, "temporal_prompt": temporal_prompt,
                 "lora": loras or None, "input": input_video, "long": long or None,
                 "context_frames": context_frames, "context_guidance": context_guidance,
                 "interpolate": interpolate, "extend": extend, "upsample": upsample, "noise_level": noise_level,
                 "guidance_weight": guidance_weight, "conditioning": conditioning, "tuned": tuned, "invert": invert,
                 "elevation": elevation}
        options = SampleOptions(frames=frames, steps=steps, min_cfg=min_cfg, max_cfg=max_cfg, seed=seed,
                                sampler=sampler, width=width, height=height, s_churn=s_churn, s_tmin=s_tmin,
                                s_tmax=s_tmax, s_noise=s_noise, **{k: v for k, v in given.items() if v is not None})
        con = console()
        result = sample_to_file(checkpoint, image, out, options, fmt=fmt, family=family, device=device,
                                dtype=dtype, progress=step_bar if progress else None, log=con.print, vae=vae,
                                multiview=multiview)
        phases = ", ".join(f"{name} {sec:.1f} s" for name, sec in result.timings.items())
        con.print(f"wrote {result.path} ({result.num_frames} frames {result.width}x{result.height} "
                  f"at {result.fps:g} fps); {phases}")
