"""The Family protocol: everything `svd train` and `svd sample` need to know about one model family.

A family owns its network, its frozen encoders, how a loader batch becomes (x0, cond), its
noise levels and loss, its sampling inputs and decoding, and its checkpoint formats. `train/`
and `sample/` call these methods and never name a family; a new family is one subclass plus a
`register()` call (svdcli.families). Methods with a body here are defaults that EDM families
(SVD and the toy family of tests/test_family_seam.py) use as they are.

The denoiser a family builds is the module the samplers and the loss see:
D(x, sigma, cond, num_video_frames, image_only_indicator) -> x0 estimate, with x (N, C, h, w)
video-major frames (N = B*T) and sigma (N,) (EDM, Karras et al. 2022, eq. 7).
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from svdcli.errors import SvdError

if TYPE_CHECKING:  # annotations only: families never import train/ or sample/
    import torch
    from torch import nn


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says about itself without its tensors: read once, shown to every family.

    `keys` and `metadata` are a safetensors file's tensor names and string metadata; a folder
    or a pickled `.ckpt` has neither (families look at the path).
    """

    path: Path
    keys: tuple[str, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def family(self) -> str | None:
        """The family a checkpoint written by `svd train` names in its metadata."""
        return self.metadata.get("family")


def read_header(path: str | Path) -> CheckpointHeader:
    """The header of `path`; a file that is neither safetensors nor `.ckpt` is a clear error."""
    path = Path(path)
    if not path.is_file() or path.suffix == ".ckpt":
        return CheckpointHeader(path)
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return CheckpointHeader(path, tuple(f.keys()), dict(f.metadata() or {}))
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise SvdError(f"{path} is not a readable safetensors checkpoint ({str(exc)[:200]})") from None


@dataclass
class TrainBatch:
    """A loader batch as the denoiser takes it: targets, conditioning, frames per video."""

    x0: torch.Tensor                      # (B*T, C, h, w) video-major
    cond: dict[str, torch.Tensor]
    frames: int                             # T
    image_only_indicator: torch.Tensor | None = None   # (B, T): 1 where a frame is a lone image
    step: int = 0                         # the optimizer step it trains (set by the loop)


@dataclass(frozen=True)
class TrainedRun:
    """What a `svd train` export records about its run, read from the training config saved in it."""

    family: str
    stage: str
    seed: int
    frames: int          # per sample as trained (the image stage trains single frames)
    height: int
    width: int
    values: dict         # the whole saved config, for the family's own keys

    @classmethod
    def from_values(cls, values: dict, default_family: str) -> "TrainedRun":
        data = values.get("data") or {}
        stage = str(values.get("stage", "video"))
        try:
            return cls(family=str(values.get("family") or default_family), stage=stage,
                       seed=int(values.get("seed", 0)),
                       frames=1 if stage == "image" else int(data.get("frames", 14)),
                       height=int(data.get("height", 256)), width=int(data.get("width", 384)), values=values)
        except (TypeError, ValueError) as exc:
            raise SvdError(f"the saved training config is not readable ({exc})") from None

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], default_family: str) -> "TrainedRun":
        try:
            values = json.loads(metadata["train_config"])
        except (KeyError, ValueError):
            raise SvdError("the checkpoint's train_config metadata is missing or not JSON") from None
        return cls.from_values(values, default_family)


@dataclass(frozen=True)
class SamplingDefaults:
    """What `svd sample` uses for a common option that is not given, per model."""

    name: str
    frames: int
    steps: int
    min_cfg: float
    max_cfg: float
    width: int
    height: int
    trained_frames: int | None = None   # frame count the model was trained on, when known
    size_multiple: int = 64             # width and height must divide by it
    sampler: str = "euler"


@dataclass(kw_only=True)
class LoadedModel:
    """A checkpoint ready to sample, and the family that reads it. Families subclass it with
    their parts (networks, encoders)."""

    family: Family
    defaults: SamplingDefaults
    kind: str                           # which checkpoint format it came from, for the user
    notes: list[str] = field(default_factory=list)
    multiview: bool = False             # its frames are the views of one camera orbit (SVD-MV)

    def modules(self) -> list[nn.Module]:
        """Every module sampling runs, to be moved to the device and dtype."""
        raise NotImplementedError


@dataclass
class SamplingInputs:
    """One video's sampler inputs: the initial N(0, I) noise (before scaling to sigma_max), the
    conditional and unconditional dicts of the guided denoiser, and what to tell the user."""

    noise: torch.Tensor                 # (B*T, C, h, w)
    cond: dict
    uncond: dict
    fps: float                          # the rate the video is written at
    notes: list[str] = field(default_factory=list)


class Family(ABC):
    """One model family (SVD, and the ones that follow it). See the module docstring."""

    name: str
    stages: tuple[str, ...]             # training stages it supports (`svd train --stage`)
    config_type: type                   # dataclass of its config keys; to_dict / from_dict

    # --- configuration -------------------------------------------------------------------
    def validate(self, cfg) -> None:
        """Reject family settings that do not fit the generic ones (stage, frames, size)."""

    # --- training ------------------------------------------------------------------------
    @abstractmethod
    def build(self, cfg, init: Path | None = None) -> nn.Module:
        """The denoiser D with `init` weights loaded and requires_grad set for the training stage."""

    def encoders(self, cfg, device: str) -> Any:
        """The frozen parts (VAE, text / image towers) on `device`, or None.

        `device` "meta": their modules without weights (the planner, svdcli.train.plan, builds
        them inside `torch.device("meta")` and reads no weights file); `build` likewise runs
        on the meta device with `init` None."""
        return None

    def training_vae(self, encoders) -> nn.Module | None:
        """The VAE whose latents `data.latents` reads from the shards (None: pixel space)."""
        return None

    @abstractmethod
    def prepare(self, video: torch.Tensor, meta: dict, encoders, cfg, gen: torch.Generator,
                device: str) -> TrainBatch:
        """Loader batch (B, T, C, H, W) in [-1, 1] + its metadata -> the denoiser's inputs."""

    def training_sigmas(self, n: int, cfg, gen: torch.Generator) -> torch.Tensor:
        """One noise level per video: ln sigma ~ N(P_mean, P_std^2) (EDM Table 1, 'Training')."""
        from svdcli.diffusion.edm import sample_sigmas_lognormal

        return sample_sigmas_lognormal(n, cfg.noise.p_mean, cfg.noise.p_std, generator=gen)

    def loss(self, denoiser: nn.Module, batch: TrainBatch, sigma: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        """Per-video loss (B,): EDM eq. 8 with lambda(sigma) = (sigma^2 + 1) / sigma^2."""
        from svdcli.diffusion.edm import edm_loss

        return edm_loss(denoiser, batch.x0, batch.cond, batch.frames, sigma=sigma.to(batch.x0.device),
                        noise=noise, image_only_indicator=batch.image_only_indicator)

    # --- checkpoints ---------------------------------------------------------------------
    @abstractmethod
    def save(self, path: Path, state: dict[str, torch.Tensor], cfg, metadata: dict[str, str]) -> None:
        """Write a trained model (`state`: the denoiser's state dict) as the family's own file;
        `metadata` (family, train_config, step, ...) goes into it unchanged."""

    @abstractmethod
    def saved_state(self, path: Path) -> dict[str, torch.Tensor]:
        """The denoiser state dict of a file `save` wrote (a resume reads its EMA weights back)."""

    def claims(self, header: CheckpointHeader) -> bool:
        """Whether this family reads the checkpoint; by default, files that name it."""
        return header.family == self.name

    @abstractmethod
    def load(self, header: CheckpointHeader) -> LoadedModel:
        """Everything sampling needs from the checkpoint `header` describes (weights on the CPU)."""

    def pack_vae(self, source: str) -> nn.Module:
        """The VAE `svd pack --latents SOURCE` stores latents of."""
        raise SvdError(f"family {self.name} stores no latents in shards (--latents {source})")

    # --- sampling ------------------------------------------------------------------------
    option_names: tuple[str, ...] = ()  # family sampling options (e.g. SVD: fps_id, motion_bucket_id)
    sampler_names: tuple[str, ...] = ("euler", "heun")  # what `--sampler` may name; `sample` runs it

    def sampling_defaults(self, model: LoadedModel, options: dict) -> SamplingDefaults:
        """Defaults of the common options for this model and these family options."""
        return model.defaults

    def check_option_names(self, options: dict) -> None:
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731 - the CLI's spelling
            takes = ", ".join(map(flag, self.option_names)) or "none"
            raise SvdError(f"family {self.name} takes no {flag(unknown[0])} (it takes: {takes})")

    def resolve_options(self, model: LoadedModel, options: dict, image, warn: Callable[[str], None]) -> dict:
        """The family options filled and checked; `image` is the conditioning image given, or None."""
        self.check_option_names(options)
        if image is not None:
            raise SvdError(f"family {self.name} is not conditioned on an image: leave out --image")
        return dict(options)

    def sigmas(self, model: LoadedModel, steps: int, device) -> torch.Tensor:
        """The sampler's noise levels, ending in 0 (Karras et al. 2022, eq. 5, rho = 7)."""
        from svdcli.diffusion.schedules import karras_sigmas

        return karras_sigmas(steps, device=device)

    @abstractmethod
    def sampling_inputs(self, model: LoadedModel, image, opts, device, dtype) -> SamplingInputs:
        """Noise and (cond, uncond) for one video from its seed and conditioning; `opts` are the
        resolved SampleOptions (common fields and `opts.family_options`)."""

    @abstractmethod
    def guided_denoiser(self, model: LoadedModel, opts, autocast_dtype) -> Callable:
        """D(x, sigma, *, cond, uncond) for the samplers, guidance included."""

    def sample(self, model: LoadedModel, inputs: SamplingInputs, opts, denoiser: Callable,
               sigmas: torch.Tensor, callback: Callable | None) -> torch.Tensor:
        """The sampling loop: x (B*T, C, h, w) at sigma = 0. By default the ODE sampler
        `opts.sampler` from the EDM prior. A family with its own loop (chunks of a long video,
        reconstruction guidance, DDIM from an inversion) overrides it and calls `callback`
        `sampling_steps` times in all; sampling runs under torch.no_grad (enable grad inside
        where a loop needs it)."""
        from svdcli.diffusion.samplers import SAMPLERS, prior_sample

        return SAMPLERS[opts.sampler](denoiser, prior_sample(inputs.noise.float(), sigmas), sigmas,
                                      extra_args={"cond": inputs.cond, "uncond": inputs.uncond}, callback=callback)

    def sampling_steps(self, model: LoadedModel, opts) -> int:
        """Network steps `sample` reports to its callback (the progress bar's total)."""
        return opts.steps

    @abstractmethod
    def decode(self, model: LoadedModel, x: torch.Tensor, opts) -> torch.Tensor:
        """Sampled x (B*T, C, h, w) -> frames (B*T, 3, H, W) in [-1, 1]."""
