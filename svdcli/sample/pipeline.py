"""Sampling for any model family: checkpoint -> family inputs -> sampler -> frames -> video file.

    pipe = VideoPipeline.from_checkpoint("svd.safetensors")          # or ours / a diffusers folder / a run
    result = pipe.generate("cond.png", SampleOptions(seed=0))        # result.frames (T, H, W, 3) uint8
    write_video(result.frames, "out.mp4", fps=result.fps)

The checkpoint's family (svdcli.families, detected from the file or forced) supplies the
model, the initial noise and (cond, uncond), the guided denoiser D(x, sigma, cond=, uncond=),
the noise levels and the decoding; the pipeline runs the sampler between them. Phases
(conditioning, sampling, decoding) are timed. Progress goes to a callback, never a console.
"""
from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.sample.options import SampleOptions, resolve

__all__ = ["SampleOptions", "VideoPipeline", "VideoResult", "frames_to_uint8", "load_model", "sample_to_file"]

NOT_FOUND_HINT = ("Official weights: svd.safetensors from https://huggingface.co/stabilityai/stable-video-diffusion-img2vid "
                  "(svd_xt.safetensors from ...-img2vid-xt); or `make demo` trains a small checkpoint to try.")


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


def load_model(path: str | Path, family: str | None = None):
    """The svdcli.families.base.LoadedModel of `path` (weights on the CPU): a run folder means its
    newest export, the header is read once, and the family is the one asked for, else the one the
    checkpoint names or claims it."""
    from svdcli import runs
    from svdcli.families import detect, family_for, read_header

    path = Path(path).expanduser()
    if not path.exists():
        raise MissingWeightsError(f"checkpoint not found: {path}. {NOT_FOUND_HINT}")
    path = runs.resolve_checkpoint(path)
    header = read_header(path)
    return (family_for(family) if family else detect(header)).load(header)


def replace_vae(model, source: str | Path) -> None:
    """Decode (and encode) with the VAE of `source` instead of the checkpoint's own: a file with
    VAE weights (a Video LDM `--stage decoder` export, an official SVD file) or a run folder."""
    from svdcli.families import pack_vae

    if getattr(model, "vae", None) is None:
        raise SvdError(f"--vae: family {model.family.name} models have no VAE to replace")
    if not Path(source).exists():
        raise MissingWeightsError(f"--vae {source}: no such file or run folder")
    vae = pack_vae(str(source))
    own, new = model.vae.cfg, vae.cfg
    if (new.z_channels, new.downsampling) != (own.z_channels, own.downsampling):
        raise SvdError(f"--vae {source}: its latents ({new.z_channels} channels, /{new.downsampling}) are not the "
                       f"model's ({own.z_channels} channels, /{own.downsampling})")
    model.vae = vae
    model.notes.append(f"VAE from {source}")


@contextmanager
def _timed(timings: dict[str, float], name: str, device: torch.device):
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


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
    """A loaded model (svdcli.families.base.LoadedModel) ready to sample; see the module docstring."""

    def __init__(self, model, device: torch.device, dtype: torch.dtype):
        self.model, self.family = model, model.family
        self.notes = list(model.notes)
        self.device, self.dtype = device, dtype
        for module in model.modules():
            _to_low_precision(module.to(device=device), dtype).eval().requires_grad_(False)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, family: str | None = None, device: str | None = None,
                        dtype: str = "auto", vae: str | Path | None = None) -> "VideoPipeline":
        """Load any supported checkpoint; its family is detected unless `family` names it; `vae`
        replaces its VAE (`replace_vae`)."""
        dev, dt = _device_dtype(device, dtype)
        model = load_model(path, family)
        if vae is not None:
            replace_vae(model, vae)
        return cls(model, dev, dt)

    def resolve(self, options: SampleOptions, image=None, warn: Callable[[str], None] = print) -> SampleOptions:
        """Fill every None from the model's defaults and check what the model can do."""
        return resolve(options, self.model, image, warn)

    def describe(self, opts: SampleOptions) -> str:
        """One line on what is about to be sampled (`opts` resolved)."""
        name = self.family.sampling_defaults(self.model, opts.family_options).name
        churn = (f" (churn {opts.s_churn:g}, S_noise {opts.s_noise:g}, sigma {opts.s_tmin:g}..{opts.s_tmax:g})"
                 if opts.s_churn > 0 else "")
        return (f"{self.model.kind} checkpoint{f' ({name})' if name else ''}: {opts.frames} frames "
                f"{opts.width}x{opts.height}, {opts.steps} {opts.sampler} steps{churn}, cfg {opts.min_cfg:g}->"
                f"{opts.max_cfg:g}, seed {opts.seed}, {self.device.type} {str(self.dtype).replace('torch.', '')}")

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def generate(self, image=None, options: SampleOptions | None = None, *, callback: Callable | None = None,
                 warn: Callable[[str], None] = print) -> VideoResult:
        """Sample one video. `image` is a path, an (H, W, 3) uint8 array, or None (a prompt, or a
        family that takes no image)."""
        opts = self.resolve(options or SampleOptions(), image, warn)
        timings: dict[str, float] = {}
        with _timed(timings, "conditioning", self.device), self._autocast():
            inputs = self.family.sampling_inputs(self.model, image, opts, self.device, self.dtype)
        for note in inputs.notes:
            warn(f"note: {note}")
        with _timed(timings, "sampling", self.device):
            sigmas = self.family.sigmas(self.model, opts.steps, self.device)
            autocast = self.dtype if self.dtype != torch.float32 else None
            denoiser = self.family.guided_denoiser(self.model, opts, autocast)
            x = self.family.sample(self.model, inputs, opts, denoiser, sigmas, callback)
        with _timed(timings, "decoding", self.device), self._autocast():
            frames = frames_to_uint8(self.family.decode(self.model, x.to(self.dtype), opts))
        return VideoResult(frames, fps=inputs.fps, timings=timings, notes=inputs.notes)


StepBar = Callable[[int], ContextManager[Callable | None]]  # total steps -> context yielding a callback


def sample_to_file(checkpoint: str | Path, image, out: str | Path, options: SampleOptions, *,
                   fmt: str | None = None, family: str | None = None, device: str | None = None,
                   dtype: str = "auto", progress: StepBar | None = None, log: Callable = print,
                   vae: str | Path | None = None, multiview: bool = False) -> VideoResult:
    """What `svd sample` does: load, sample (`progress(total)` gives the per-step callback),
    write; timings include loading. `multiview`: the frames are an orbit's views, written as
    svdcli.sample.multiview writes them (a multi-view checkpoint only)."""
    from svdcli.families.image import read_image
    from svdcli.outputs import check_writable, writing
    from svdcli.sample.options import check_sampler
    from svdcli.sample.output import output_format, output_path, write_video

    # a bad --out (or one that cannot be written), image or sampler fails before the model loads
    if multiview:
        from svdcli.sample.multiview import check_out

        check_out(Path(out))
        check_writable(out, "--out")
    else:
        check_writable(output_path(Path(out), output_format(Path(out), fmt)), "--out")
    if isinstance(image, (str, Path)):
        if Path(image).is_dir():
            raise SvdError(f"--image {image} is a folder; give one image file (png, jpg, webp...)")
        read_image(image)
    if options.sampler is not None:
        check_sampler(options.sampler)  # a name no family knows
    start = time.perf_counter()
    pipe = VideoPipeline.from_checkpoint(checkpoint, family=family, device=device, dtype=dtype, vae=vae)
    loading = time.perf_counter() - start
    for note in pipe.notes:
        log(f"note: {note}")
    if multiview and not pipe.model.multiview:
        raise SvdError(f"--multiview needs a multi-view checkpoint (`svd train --stage multiview`); {checkpoint} "
                       "generates videos")
    opts = pipe.resolve(options, image, warn=lambda msg: None)
    log(pipe.describe(opts))
    with (progress(pipe.family.sampling_steps(pipe.model, opts)) if progress else nullcontext()) as step:
        result = pipe.generate(image, options, callback=step, warn=log)
    start = time.perf_counter()
    if multiview:
        from svdcli.sample.multiview import write_views

        with writing(out):
            result.path = write_views(result.frames, out, result.fps, opts.family_options.elevation)
    else:
        with writing(output_path(Path(out), output_format(Path(out), fmt))):
            result.path = write_video(result.frames, out, result.fps, fmt)
    result.timings = {"loading": loading, **result.timings, "writing": time.perf_counter() - start}
    return result
