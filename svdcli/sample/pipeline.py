"""Image-to-video sampling, as the official `simple_video_sample.py` does it.

    pipe = VideoPipeline.from_checkpoint("svd.safetensors")          # or ours / a diffusers folder
    result = pipe.generate("cond.png", SampleOptions(seed=0))        # result.frames (T, H, W, 3) uint8
    write_video(result.frames, "out.mp4", fps=result.fps)

Phases: conditioning (CLIP image embedding, VAE latent of the noised image, micro-conditioning
vector), sampling (Karras sigmas, Euler or Heun, linear per-frame guidance with cond and uncond
in one batch), decoding (temporal VAE, `decode_chunk` frames a call). Each phase is timed.
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from svdcli.diffusion.guidance import LinearPredictionGuider, guided_denoiser
from svdcli.diffusion.samplers import SAMPLERS, denoiser_calls, prior_sample
from svdcli.diffusion.schedules import karras_sigmas
from svdcli.errors import SvdError
from svdcli.sample.presets import ModelDefaults, check_frames, with_overrides


@dataclass
class SampleOptions:
    """One sampling request; None means the checkpoint's default."""

    frames: int | None = None
    steps: int | None = None
    min_cfg: float | None = None
    max_cfg: float | None = None
    fps_id: int = 6
    motion_bucket_id: int = 127
    cond_aug: float = 0.02
    seed: int = 0
    sampler: str = "euler"
    decode_chunk: int | None = None
    width: int | None = None
    height: int | None = None
    prompt: str | None = None


@dataclass
class VideoResult:
    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    notes: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]


def guided_video_denoiser(unet: torch.nn.Module, num_frames: int, *, min_cfg: float, max_cfg: float,
                          autocast_dtype: torch.dtype | None = None) -> Callable:
    """D(x, sigma, cond=, uncond=) for the samplers: EDM v-denoiser + linear per-frame guidance."""
    from svdcli.diffusion.edm import Denoiser

    denoiser = Denoiser(unet)
    guider = LinearPredictionGuider(min_cfg, max_cfg, num_frames)
    device = next(unet.parameters()).device

    def run(x: torch.Tensor, sigma: torch.Tensor, cond: dict) -> torch.Tensor:
        # the network may run in half precision; the sampler state x stays float32
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
        indicator = torch.zeros(x.shape[0] // num_frames, num_frames, device=x.device)
        with ctx:
            d = denoiser(x, sigma, cond, num_frames, indicator)
        return d.float()

    return guided_denoiser(run, guider)


@contextmanager
def _timed(timings: dict[str, float], name: str, device: torch.device):
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def _noise(seed: int, image_shape: tuple, latent_shape: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """This video's conditioning-image noise, then its initial latent noise, from one seeded stream.

    Same order as the official script after torch.manual_seed(seed), and drawn on the CPU so
    the same seed gives the same video on every device and at every batch size.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(image_shape, generator=gen), torch.randn(latent_shape, generator=gen)


def frames_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [-1, 1] -> (T, H, W, 3) uint8, truncating as the official script does."""
    x = ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    return (x.permute(0, 2, 3, 1) * 255).to(torch.uint8).cpu().numpy()
