"""The Family protocol: everything `svd train` and `svd sample` need to know about one model family.

A family owns its network, its frozen encoders, how a loader batch becomes (x0, cond), its
noise levels and loss, its sampling inputs and decoding, and its checkpoint formats. `train/`
and `sample/` call these methods and never name a family; a new family is one subclass plus a
`register()` call (svdcli.families).

A family package keeps its class (in `__init__.py`) free of torch: name, stages, config type,
sampling options, and the few methods that need none of its code. The rest are functions of
its own modules, found by name when first needed (`Family._own`): `config.validate(cfg)`, and
in `training.py` / `sampling.py` a function per method it defines, named as the method and
taking the family first (`def prepare(family, video, meta, encoders, cfg, gen, device)`).
A method whose function a family does not define runs the default written here (EDM's
noise levels and loss, Karras sigmas, the ODE sampler, no encoders, no options).

The denoiser a family builds is the module the samplers and the loss see, `edm.Denoiser`:
D(x, sigma, cond, num_video_frames, image_only_indicator) -> x0 estimate, with x (N, C, h, w)
video-major frames (N = B*T) and sigma (N,) (EDM, Karras et al. 2022, eq. 7), and its loss.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

from svdcli.errors import SvdError
from svdcli.families.options import FamilyOptions

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


class Family:
    """One model family (SVD, and the ones that follow it). See the module docstring.

    The methods below are the seam. Each runs the function of the same name in the family's
    own modules when there is one (`_own`), else the default written here; a family whose
    method needs none of its modules overrides it in its class.
    """

    name: str
    stages: tuple[str, ...]             # training stages it supports (`svd train --stage`)
    config_type: type                   # dataclass of its config keys; to_dict / from_dict
    Options: type[FamilyOptions] = FamilyOptions   # its `svd sample` options, typed (options.py)
    sampler_names: tuple[str, ...] = ("euler", "heun")  # what `--sampler` may name; `sample` runs it

    # --- where a method's function lives ---------------------------------------------------
    def _own(self, part: str, name: str) -> Callable | None:
        """`name` defined in `<package>.<part>` (config, training, sampling) of this family or,
        for a family derived from another, of the first ancestor that defines it."""
        for cls in type(self).__mro__:
            if cls is Family or not issubclass(cls, Family):
                break
            fn = getattr(_part(cls.__module__, part), name, None)
            if inspect.isfunction(fn):
                return fn
        return None

    def _required(self, part: str, name: str) -> Callable:
        fn = self._own(part, name)
        if fn is None:
            package = type(self).__module__.replace(".", "/")
            raise NotImplementedError(f"family {self.name} defines no {name} (a method of its class, "
                                      f"or a function {name}(family, ...) in {package}/{part}.py)")
        return fn

    # --- configuration -------------------------------------------------------------------
    def validate(self, cfg) -> None:
        """Reject family settings that do not fit the generic ones (stage, frames, size): the
        family's `config.validate(cfg)`, if it has one."""
        check = self._own("config", "validate")
        if check is not None:
            check(cfg)

    def requirements(self, cfg) -> tuple[str, ...]:
        """Optional packages (import names, svdcli.optional.EXTRAS) that training with `cfg` imports."""
        return ()

    def check_requirements(self, cfg) -> None:
        """Every package of `requirements` installed, else one line naming its pip extra."""
        from svdcli.optional import require

        require(*self.requirements(cfg), needed_by=f"--family {self.name} --stage {cfg.stage}")

    # --- training ------------------------------------------------------------------------
    def build(self, cfg, init: Path | None = None) -> nn.Module:
        """The denoiser (`svdcli.diffusion.edm.Denoiser`) with `init` weights loaded and
        requires_grad set for the training stage."""
        return self._required("training", "build")(self, cfg, init)

    def encoders(self, cfg, device: str) -> Any:
        """The frozen parts (VAE, text / image towers) on `device`, or None.

        `device` "meta": their modules without weights (the planner, svdcli.train.plan, builds
        them inside `torch.device("meta")` and reads no weights file); `build` likewise runs
        on the meta device with `init` None."""
        fn = self._own("training", "encoders")
        return fn(self, cfg, device) if fn else None

    def training_vae(self, encoders) -> nn.Module | None:
        """The VAE whose latents `data.latents` reads from the shards (None: pixel space)."""
        fn = self._own("training", "training_vae")
        return fn(self, encoders) if fn else None

    def prepare(self, video: torch.Tensor, meta: dict, encoders, cfg, gen: torch.Generator,
                device: str) -> TrainBatch:
        """Loader batch (B, T, C, H, W) in [-1, 1] + its metadata -> the denoiser's inputs."""
        return self._required("training", "prepare")(self, video, meta, encoders, cfg, gen, device)

    def training_sigmas(self, n: int, cfg, gen: torch.Generator) -> torch.Tensor:
        """One noise level per video; by default ln sigma ~ N(P_mean, P_std^2) (EDM Table 1, 'Training')."""
        fn = self._own("training", "training_sigmas")
        if fn is not None:
            return fn(self, n, cfg, gen)
        from svdcli.diffusion.edm import sample_sigmas_lognormal

        return sample_sigmas_lognormal(n, cfg.noise.p_mean, cfg.noise.p_std, generator=gen)

    def loss(self, denoiser: nn.Module, batch: TrainBatch, sigma: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        """Per-video loss (B,): by default the denoiser's own (`Denoiser.loss`). `denoiser` is
        called, not asked for `.loss`: in training it is the DeepSpeed engine, whose hooks run
        around its forward only."""
        fn = self._own("training", "loss")
        if fn is not None:
            return fn(self, denoiser, batch, sigma, noise)
        return denoiser(batch.x0, sigma, batch.cond, batch.frames, batch.image_only_indicator, loss_noise=noise)

    # --- checkpoints ---------------------------------------------------------------------
    def save(self, path: Path, state: dict[str, torch.Tensor], cfg, metadata: dict[str, str]) -> None:
        """Write a trained model (`state`: the denoiser's state dict) as the family's own file;
        `metadata` (family, train_config, step, ...) goes into it unchanged. By default the
        state as it is, in one safetensors file."""
        fn = self._own("training", "save")
        if fn is not None:
            return fn(self, path, state, cfg, metadata)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)

    def saved_state(self, path: Path) -> dict[str, torch.Tensor]:
        """The denoiser state dict of a file `save` wrote (a resume reads its EMA weights back)."""
        fn = self._own("training", "saved_state")
        if fn is not None:
            return fn(self, path)
        from safetensors.torch import load_file

        return load_file(str(path))

    def claims(self, header: CheckpointHeader) -> bool:
        """Whether this family reads the checkpoint; by default, files that name it."""
        return header.family == self.name

    def load(self, header: CheckpointHeader) -> LoadedModel:
        """Everything sampling needs from the checkpoint `header` describes (weights on the CPU)."""
        return self._required("sampling", "load")(self, header)

    def pack_vae(self, source: str) -> nn.Module:
        """The VAE `svd pack --latents SOURCE` stores latents of."""
        fn = self._own("training", "pack_vae")
        if fn is None:
            raise SvdError(f"family {self.name} stores no latents in shards (--latents {source})")
        return fn(self, source)

    # --- sampling ------------------------------------------------------------------------
    def parse_options(self, options: dict) -> FamilyOptions:
        """A request's family options as `Options`: unknown names and wrong types refused."""
        return self.Options.parse(options, self.name)

    def sampling_defaults(self, model: LoadedModel, options: FamilyOptions) -> SamplingDefaults:
        """Defaults of the common options for this model and these family options."""
        fn = self._own("sampling", "sampling_defaults")
        return fn(self, model, options) if fn else model.defaults

    def resolve_options(self, model: LoadedModel, options: FamilyOptions, image,
                        warn: Callable[[str], None]) -> FamilyOptions:
        """The parsed family options completed and checked against the model; `image` is the
        conditioning image given, or None (refused by default)."""
        fn = self._own("sampling", "resolve_options")
        if fn is not None:
            return fn(self, model, options, image, warn)
        if image is not None:
            raise SvdError(f"family {self.name} is not conditioned on an image: leave out --image")
        return options

    def sigmas(self, model: LoadedModel, steps: int, device) -> torch.Tensor:
        """The sampler's noise levels, ending in 0; by default Karras et al. 2022, eq. 5, rho = 7."""
        fn = self._own("sampling", "sigmas")
        if fn is not None:
            return fn(self, model, steps, device)
        from svdcli.diffusion.schedules import karras_sigmas

        return karras_sigmas(steps, device=device)

    def sampling_inputs(self, model: LoadedModel, image, opts, device, dtype) -> SamplingInputs:
        """Noise and (cond, uncond) for one video from its seed and conditioning; `opts` are the
        resolved SampleOptions (common fields, and the family's in `opts.family_options`)."""
        return self._required("sampling", "sampling_inputs")(self, model, image, opts, device, dtype)

    def guided_denoiser(self, model: LoadedModel, opts, autocast_dtype) -> Callable:
        """D(x, sigma, *, cond, uncond) for the samplers, guidance included."""
        return self._required("sampling", "guided_denoiser")(self, model, opts, autocast_dtype)

    def sample(self, model: LoadedModel, inputs: SamplingInputs, opts, denoiser: Callable,
               sigmas: torch.Tensor, callback: Callable | None) -> torch.Tensor:
        """The sampling loop: x (B*T, C, h, w) at sigma = 0. By default the ODE sampler
        `opts.sampler` from the EDM prior. A family with its own loop (chunks of a long video,
        reconstruction guidance, DDIM from an inversion) defines it and calls `callback`
        `sampling_steps` times in all; sampling runs under torch.no_grad (enable grad inside
        where a loop needs it)."""
        fn = self._own("sampling", "sample")
        if fn is not None:
            return fn(self, model, inputs, opts, denoiser, sigmas, callback)
        from svdcli.diffusion.samplers import SAMPLERS, prior_sample, step_generator

        churn = {}
        if opts.s_churn > 0:   # EDM Alg. 2; its noise from the video's seed
            churn = dict(s_churn=opts.s_churn, s_tmin=opts.s_tmin, s_tmax=opts.s_tmax, s_noise=opts.s_noise,
                         generator=step_generator(opts.seed, 0))
        return SAMPLERS[opts.sampler](denoiser, prior_sample(inputs.noise.float(), sigmas), sigmas,
                                      extra_args={"cond": inputs.cond, "uncond": inputs.uncond}, callback=callback,
                                      **churn)

    @property
    def takes_churn(self) -> bool:
        """Whether its sampling runs `sample`'s default, the Euler / Heun samplers that churn."""
        return type(self).sample is Family.sample and self._own("sampling", "sample") is None

    def sampling_steps(self, model: LoadedModel, opts) -> int:
        """Network steps `sample` reports to its callback (the progress bar's total)."""
        fn = self._own("sampling", "sampling_steps")
        return fn(self, model, opts) if fn else opts.steps

    def decode(self, model: LoadedModel, x: torch.Tensor, opts) -> torch.Tensor:
        """Sampled x (B*T, C, h, w) -> frames (B*T, 3, H, W) in [-1, 1]."""
        return self._required("sampling", "decode")(self, model, x, opts)


@functools.cache
def _part(package: str, part: str) -> ModuleType | None:
    """The module `<package>.<part>`, imported on first use; None when the family has none."""
    try:
        return importlib.import_module(f"{package}.{part}")
    except ModuleNotFoundError as exc:
        if exc.name in (f"{package}.{part}", package):
            return None
        raise
