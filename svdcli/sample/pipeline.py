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
from svdcli.diffusion.samplers import SAMPLERS, prior_sample
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
    a seed gives the same noise on every device and whatever else is sampled alongside.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(image_shape, generator=gen), torch.randn(latent_shape, generator=gen)


def frames_to_uint8(x: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [-1, 1] -> (T, H, W, 3) uint8, truncating as the official script does."""
    x = ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)
    return (x.permute(0, 2, 3, 1) * 255).to(torch.uint8).cpu().numpy()


def _device_dtype(device: str | None, dtype: str) -> tuple[torch.device, torch.dtype]:
    try:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise SvdError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SvdError("--device cuda asked for, but no CUDA GPU is visible")
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return dev, torch.float16 if dev.type == "cuda" else torch.float32
    if dtype not in table:
        raise SvdError(f"--dtype must be auto, fp32, fp16 or bf16, not {dtype!r}")
    return dev, table[dtype]


def _to_low_precision(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Weights in `dtype`, normalisation layers kept in float32.

    The norms compute in float32 (sgm's GroupNorm32), which needs float32 parameters; they are
    a negligible share of the weights.
    """
    module.to(dtype=dtype)
    if dtype != torch.float32:
        for sub in module.modules():
            if isinstance(sub, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
                sub.float()
    return module


class VideoPipeline:
    """A loaded model ready to sample; see the module docstring for use."""

    def __init__(self, loaded, device: torch.device, dtype: torch.dtype):
        self.unet, self.vae, self.encode = loaded.unet, loaded.vae, loaded.encode
        self.defaults: ModelDefaults = loaded.defaults
        self.kind, self.notes = loaded.kind, list(loaded.notes)
        self.device, self.dtype = device, dtype
        for module in (self.unet, self.vae, *self.encode.modules):
            _to_low_precision(module.to(device=device), dtype).eval().requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, model: str | None = None, device: str | None = None,
                        dtype: str = "auto") -> "VideoPipeline":
        """Load any supported checkpoint (official file, diffusers folder, ours, a training run)."""
        from svdcli.sample.loading import load_model

        dev, dt = _device_dtype(device, dtype)
        return cls(load_model(path, model), dev, dt)

    def resolve(self, options: SampleOptions, warn: Callable[[str], None] = print) -> SampleOptions:
        """Fill every None from the model's defaults and check what the model can do."""
        from svdcli.sample.image import fit_size

        d = with_overrides(self.defaults, frames=options.frames, steps=options.steps,
                           min_cfg=options.min_cfg, max_cfg=options.max_cfg)
        check_frames(self.defaults, d.frames, warn)
        if options.sampler not in SAMPLERS:
            raise SvdError(f"unknown --sampler {options.sampler!r}; choose one of {', '.join(SAMPLERS)}")
        width, height = fit_size(options.width or d.width, options.height or d.height)
        if (options.width and width != options.width) or (options.height and height != options.height):
            warn(f"note: sizes must be multiples of 64; sampling at {width}x{height}")
        if options.motion_bucket_id > 255:
            warn("note: motion buckets above 255 were never seen in training")
        return SampleOptions(**{**options.__dict__, "frames": d.frames, "steps": d.steps, "min_cfg": d.min_cfg,
                                "max_cfg": d.max_cfg, "width": width, "height": height,
                                "decode_chunk": options.decode_chunk or d.decode_chunk})

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def generate(self, image, options: SampleOptions | None = None, *, callback: Callable | None = None,
                 warn: Callable[[str], None] = print) -> VideoResult:
        """Sample one video. `image` is a path, an (H, W, 3) uint8 array, or None with a prompt."""
        opts = self.resolve(options or SampleOptions(), warn)
        timings: dict[str, float] = {}
        with _timed(timings, "conditioning", self.device), self._autocast():
            pixels, notes = self._image(image, opts)
            cond, uncond, latent_noise = self._conditions(pixels, opts)
        for note in notes:
            warn(f"note: {note}")
        with _timed(timings, "sampling", self.device):
            latents = self.sample_latents(latent_noise, cond, uncond, opts, callback)
        with _timed(timings, "decoding", self.device):
            frames = self.decode(latents, opts.frames, opts.decode_chunk)
        return VideoResult(frames, fps=float(opts.fps_id + 1), timings=timings, notes=notes)

    def decode(self, latents: torch.Tensor, frames: int, chunk: int | None) -> np.ndarray:
        """Diffusion latents (B*T, 4, h, w) -> (B*T, H, W, 3) uint8, `chunk` frames per VAE call."""
        with self._autocast():
            pixels = self.vae.decode_diffusion_latents(latents.to(self.dtype), frames, chunk)
        return frames_to_uint8(pixels)

    def _image(self, image, opts: SampleOptions) -> tuple[torch.Tensor | None, list[str]]:
        from svdcli.sample.image import prepare_image, read_image, to_model_range

        if image is None:
            return None, []
        if getattr(self.encode, "mode", "i2v") == "t2v":
            return None, ["this checkpoint is text-conditioned: the image is not used"]
        pixels = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image, np.uint8)
        prepared = prepare_image(pixels, opts.width, opts.height)
        notes = [prepared.note + " (--width/--height choose another size)"] if prepared.note else []
        return to_model_range(prepared.pixels).to(self.device), notes

    def _conditions(self, pixels, opts: SampleOptions):
        """Per-frame (cond, uncond) and the initial latent noise, from this video's seed."""
        from svdcli.models.conditioner import repeat_over_frames

        z, f = self.vae.cfg.z_channels, self.vae.cfg.downsampling
        image_shape = (1, 3, opts.height, opts.width)
        latent_shape = (opts.frames, z, opts.height // f, opts.width // f)
        image_noise, latent_noise = _noise(opts.seed, image_shape, latent_shape)
        cond, uncond = self.encode(pixels if pixels is None else pixels.to(self.dtype),
                                   fps_id=opts.fps_id, motion_bucket_id=opts.motion_bucket_id,
                                   cond_aug=opts.cond_aug, noise=image_noise.to(self.device, self.dtype),
                                   prompt=opts.prompt)
        cond = {k: v.float() for k, v in repeat_over_frames(cond, opts.frames).items()}
        uncond = {k: v.float() for k, v in repeat_over_frames(uncond, opts.frames).items()}
        return cond, uncond, latent_noise.to(self.device)

    def sample_latents(self, noise: torch.Tensor, cond: dict, uncond: dict, opts: SampleOptions,
                       callback: Callable | None = None) -> torch.Tensor:
        """Noise (B*T, 4, h, w) -> diffusion latents, with the options' sampler, steps and guidance."""
        sigmas = karras_sigmas(opts.steps, device=self.device)
        autocast = self.dtype if self.dtype != torch.float32 else None
        denoiser = guided_video_denoiser(self.unet, opts.frames, min_cfg=opts.min_cfg, max_cfg=opts.max_cfg,
                                         autocast_dtype=autocast)
        sampler = SAMPLERS[opts.sampler]
        return sampler(denoiser, prior_sample(noise.float(), sigmas), sigmas,
                       extra_args={"cond": cond, "uncond": uncond}, callback=callback)


def sample_to_file(checkpoint: str | Path, image, out: str | Path, options: SampleOptions, *,
                   fmt: str | None = None, model: str | None = None, device: str | None = None,
                   dtype: str = "auto", progress: bool = True, log: Callable = print) -> VideoResult:
    """What `svd sample` does: load, sample with a progress bar, write; timings include loading."""
    from svdcli.sample.output import output_format, write_video

    from svdcli.sample.image import read_image

    output_format(Path(out), fmt)  # a bad --out or image fails before the model loads
    if isinstance(image, (str, Path)):
        read_image(image)
    start = time.perf_counter()
    pipe = VideoPipeline.from_checkpoint(checkpoint, model=model, device=device, dtype=dtype)
    loading = time.perf_counter() - start
    for note in pipe.notes:
        log(f"note: {note}")
    opts = pipe.resolve(options, warn=lambda msg: None)
    kind = {"ours": "own", "trained": "training export"}.get(pipe.kind, pipe.kind)
    model = f" ({pipe.defaults.name})" if pipe.defaults.name in ("svd", "svd_xt") else ""
    log(f"{kind} checkpoint{model}: {opts.frames} frames {opts.width}x{opts.height}, "
        f"{opts.steps} {opts.sampler} steps, cfg {opts.min_cfg:g}->{opts.max_cfg:g}, seed {opts.seed}, "
        f"{pipe.device.type} {str(pipe.dtype).replace('torch.', '')}")
    with _progress_bar(progress, opts.steps) as step:
        result = pipe.generate(image, options, callback=step, warn=log)
    start = time.perf_counter()
    result.path = write_video(result.frames, out, result.fps, fmt)
    result.timings = {"loading": loading, **result.timings, "writing": time.perf_counter() - start}
    return result


@contextmanager
def _progress_bar(enabled: bool, total: int):
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from svdcli.cli.common import console

    columns = (TextColumn("sampling"), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console(), transient=True) as bar:
        task = bar.add_task("sampling", total=total)
        yield lambda state: bar.update(task, completed=state["i"] + 1)
