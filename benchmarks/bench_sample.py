"""Sampling: seconds per video and peak memory, ours vs diffusers' StableVideoDiffusionPipeline.

Both run the same random weights: a diffusers pipeline is built (tiny on CPU, full-size SVD on
a GPU), saved as a diffusers folder, and our `VideoPipeline` loads that folder through its
diffusers loader. Same image, seed, frames, steps and guidance; the initial noise is drawn the
same way (CPU generator, conditioning-image noise first), so the outputs should agree up to
rounding, and the script reports how far apart they are.

    .venv/bin/python -m benchmarks.bench_sample            # CPU tiny, and GPU full size if present
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SVD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                     beta_schedule="scaled_linear", prediction_type="v_prediction",
                     interpolation_type="linear", use_karras_sigmas=True, sigma_min=0.002,
                     sigma_max=700.0, timestep_spacing="leading", timestep_type="continuous",
                     steps_offset=1)


@dataclass
class Case:
    name: str
    frames: int
    width: int
    height: int
    steps: int
    repeats: int


def build_diffusers(folder: Path, full: bool, device: str, dtype) -> None:
    """Random-weight SVD pipeline (full size or tiny), saved to `folder`."""
    import torch
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler,
                           StableVideoDiffusionPipeline, UNetSpatioTemporalConditionModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from svdcli.models.config import UNetConfig
    from svdcli.families.svd.unet_diffusers import diffusers_unet_config

    torch.manual_seed(0)
    unet_cfg = {k: v for k, v in diffusers_unet_config(UNetConfig.svd() if full else UNetConfig.tiny()).items()
                if not k.startswith("_")}
    chans = (128, 256, 512, 512) if full else (32, 32, 32, 64)
    clip = (CLIPVisionConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=16,
                             num_hidden_layers=32, patch_size=14, image_size=224, projection_dim=1024,
                             hidden_act="gelu")
            if full else CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                                          num_hidden_layers=2, patch_size=32, image_size=224, projection_dim=40))
    with torch.device(device):
        pipe = StableVideoDiffusionPipeline(
            vae=AutoencoderKLTemporalDecoder(block_out_channels=chans, down_block_types=["DownEncoderBlock2D"] * 4,
                                             layers_per_block=2, latent_channels=4),
            image_encoder=CLIPVisionModelWithProjection(clip),
            unet=UNetSpatioTemporalConditionModel(**unet_cfg),
            scheduler=EulerDiscreteScheduler(**SVD_SCHEDULER),
            feature_extractor=CLIPImageProcessor())
    pipe.to(dtype=dtype).save_pretrained(str(folder))


def _image(case: Case) -> np.ndarray:
    yy, xx = np.mgrid[0:case.height, 0:case.width]
    return np.stack([xx * 255 // case.width, yy * 255 // case.height, (xx + yy) % 256], -1).astype(np.uint8)


def _timed(fn, repeats: int, sync) -> tuple[float, object]:
    """Median seconds of `repeats` runs after one warm-up (nan for none), and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - start)
    return (statistics.median(times) if times else float("nan")), out


def _load_theirs(folder: str, device: str, dtype):
    import torch
    from diffusers import StableVideoDiffusionPipeline

    from svdcli.families.svd.unet_diffusers import set_sgm_eps

    pipe = StableVideoDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
    set_sgm_eps(pipe.unet)  # official weights were trained with sgm's eps; ours uses it
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_case(case: Case, device: str, full: bool) -> dict:
    """Time diffusers, free it, then time ours: each peak is measured with only its own weights."""
    import torch
    from PIL import Image

    from svdcli.sample.pipeline import SampleOptions, VideoPipeline

    dtype = torch.float16 if device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    image = _image(case)
    opts = SampleOptions(frames=case.frames, steps=case.steps, min_cfg=1.0, max_cfg=2.5, seed=0,
                         width=case.width, height=case.height, decode_chunk=min(14, case.frames))

    def run_theirs(pipe):
        gen = torch.Generator("cpu").manual_seed(0)
        out = pipe(Image.fromarray(image), height=case.height, width=case.width, num_frames=case.frames,
                   num_inference_steps=case.steps, min_guidance_scale=1.0, max_guidance_scale=2.5,
                   fps=7, motion_bucket_id=127, noise_aug_strength=0.02, decode_chunk_size=opts.family_options["decode_chunk"],
                   generator=gen, output_type="np").frames[0]
        return (np.asarray(out) * 255).astype(np.uint8)  # truncation, as ours and the official script

    def run_ours(pipe):
        return pipe.generate(image, opts, warn=lambda m: None).frames

    loaders = {"diffusers": lambda tmp: _load_theirs(tmp, device, dtype),
               "ours": lambda tmp: VideoPipeline.from_checkpoint(tmp, device=device,
                                                                 dtype="fp16" if device == "cuda" else "fp32")}
    runners = {"diffusers": run_theirs, "ours": run_ours}
    row = {"case": case.name, "device": device}
    with tempfile.TemporaryDirectory() as tmp:
        build_diffusers(Path(tmp), full, device, dtype)
        for name in ("diffusers", "ours"):
            pipe = loaders[name](tmp)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            row[f"{name}_s"], row[f"{name}_frames"] = _timed(lambda: runners[name](pipe), case.repeats, sync)
            if device == "cuda":
                row[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            del pipe
            if device == "cuda":
                torch.cuda.empty_cache()
    ours = row.pop("ours_frames").astype(int)
    diff = np.abs(ours - row.pop("diffusers_frames").astype(int))
    row.update(frame_std=float(ours.std()), ratio=row["ours_s"] / row["diffusers_s"], max_diff=int(diff.max()), mean_diff=float(diff.mean()))
    return row


def _print(row: dict) -> None:
    mem = (f", peak {row['ours_peak_gib']:.1f} vs {row['diffusers_peak_gib']:.1f} GiB"
           if "ours_peak_gib" in row else "")
    print(f"{row['case']} [{row['device']}]: ours {row['ours_s']:.2f} s/video, diffusers "
          f"{row['diffusers_s']:.2f} s/video, ratio {row['ratio']:.2f}{mem}; output difference "
          f"max {row['max_diff']} / mean {row['mean_diff']:.2f} uint8 levels", flush=True)


def main() -> None:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    _print(run_case(Case("tiny 5 frames 64x128, 4 steps", 5, 128, 64, 4, repeats=3), "cpu", full=False))
    if not torch.cuda.is_available():
        print("GPU: not run (no CUDA device); full-size SVD 14x576x1024, 25 steps runs where one is present")
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    _print(run_case(Case("SVD 14 frames 576x1024, 25 steps", 14, 1024, 576, 25, repeats=2), "cuda", full=True))


if __name__ == "__main__":
    main()
