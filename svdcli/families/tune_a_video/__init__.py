"""Tune-A-Video (Wu et al., ICCV 2023, arXiv 2212.11565): one-shot tuning of a text-to-image
model on one text-video pair, then editing that video by prompt.

    config.py     the family's training-config keys (base, prompt, prediction, text, attention)
    base.py       the image model inflated: our `--stage image` export or an SD 2.1 file
    inflate.py    inflation (per-frame convs, ST-Attn, temporal attention) and what tunes
    network.py    the denoiser and its conditioning
    training.py   the `tune` stage: batch, noise levels, the base's loss
    delta.py      the tuned tensors as a delta file tied to the base's sha256
    sampling.py   DDIM inversion of the source video, DDIM with guidance
`svd tune` (svdcli/cli/tune.py) packs the clip and runs the `tune` stage through `svd train`'s
engine; `svd sample --family tune_a_video --checkpoint BASE --tuned RUN` edits. No torch here.
"""
from __future__ import annotations

import json
from pathlib import Path

from svdcli.errors import SvdError
from svdcli.families.base import Family, SamplingInputs
from svdcli.families.tune_a_video.config import TAVConfig


class TAVEncoders:
    """The frozen parts of tuning: the base's VAE and text tower."""

    def __init__(self, base):
        self.base = base

    def to(self, device) -> "TAVEncoders":
        self.base.vae.to(device)
        self.base.text.to(device)
        return self


class TuneAVideoFamily(Family):
    name = "tune_a_video"
    stages = ("tune",)
    config_type = TAVConfig
    option_names = ("prompt", "tuned", "invert")
    sampler_names = ("ddim",)

    def validate(self, cfg) -> None:
        from svdcli.families.tune_a_video.config import validate

        validate(cfg)

    def _base(self, own: TAVConfig, seed: int, path=None):
        from svdcli.families.tune_a_video.base import load_base

        return load_base(path or own.base, own.prediction, own.text, seed)

    # --- training ------------------------------------------------------------------------
    def build(self, cfg, init: Path | None = None):
        from svdcli.families.tune_a_video.network import build_denoiser

        own = cfg.family_config
        return build_denoiser(self._base(own, cfg.seed, init), own.attention, cfg.seed)

    def encoders(self, cfg, device: str):
        return TAVEncoders(self._base(cfg.family_config, cfg.seed)).to(device)

    def training_vae(self, encoders):
        return encoders.base.vae

    def prepare(self, video, meta, encoders, cfg, gen, device):
        from svdcli.families.tune_a_video.training import prepare

        return prepare(video, meta, encoders, cfg, gen, device)

    def training_sigmas(self, n: int, cfg, gen):
        from svdcli.families.tune_a_video.training import training_sigmas

        return training_sigmas(n, cfg, gen, self._base(cfg.family_config, cfg.seed).prediction)

    def loss(self, denoiser, batch, sigma, noise):
        from svdcli.families.tune_a_video.base import prediction_of
        from svdcli.families.tune_a_video.training import loss

        module = getattr(denoiser, "module", denoiser)   # the DeepSpeed engine wraps the Denoiser
        return loss(denoiser, batch, sigma, noise, prediction_of(module.scaling))

    # --- checkpoints ---------------------------------------------------------------------
    def save(self, path: Path, state, cfg, metadata: dict[str, str]) -> None:
        """The delta file: tuned tensors only, with the base's sha256 (delta.py)."""
        from svdcli.families.tune_a_video.delta import save_delta

        base = self._base(cfg.family_config, cfg.seed)
        unet = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
        save_delta(path, unet, base.digest, str(base.path), metadata)

    def saved_state(self, path: Path):
        """The whole denoiser state: the base inflated, the delta applied."""
        from svdcli.families.base import read_header

        model = self.load(read_header(path))
        return model.denoiser.state_dict()

    def load(self, header):
        """A base image file (untuned; `--tuned` applies a delta) or a delta file itself."""
        from svdcli.families.base import TrainedRun
        from svdcli.families.tune_a_video.delta import DELTA_FORMAT, apply_delta
        from svdcli.families.tune_a_video.sampling import tav_model

        meta, delta = header.metadata, None
        own, seed, frames, size = TAVConfig(), 0, 8, (512, 512)
        if meta.get("format") == DELTA_FORMAT:
            run = TrainedRun.from_metadata(meta, default_family=self.name)
            own, seed, frames, size, delta = TAVConfig.from_dict(run.values), run.seed, run.frames, \
                (run.width, run.height), header.path
            base = self._base(own, seed, meta["base_path"])
        else:
            base = self._base(own, seed, header.path)
        if base.kind == "ours" and delta is None:
            size = (256, 256)
        model = tav_model(self, base, own.attention, seed, frames, size)
        if delta is not None:
            model.tuned = apply_delta(model.denoiser.net, delta, base.digest)
        return model

    # --- sampling ------------------------------------------------------------------------
    def sampling_defaults(self, model, options: dict):
        tuned = self._tuned_run(options.get("tuned")) if options.get("tuned") else None
        if tuned is None:
            return model.defaults
        from dataclasses import replace

        return replace(model.defaults, frames=tuned.frames, width=tuned.width, height=tuned.height,
                       trained_frames=tuned.frames)

    def _tuned_run(self, path):
        from svdcli.families.base import TrainedRun
        from svdcli.families.tune_a_video.delta import read_delta

        return TrainedRun.from_metadata(read_delta(Path(path))[1], default_family=self.name)

    def resolve_options(self, model, options: dict, image, warn) -> dict:
        from svdcli.families.tune_a_video.delta import apply_delta

        self.check_option_names(options)
        if image is not None:
            raise SvdError("tune_a_video edits a video by prompt: leave out --image (use --invert VIDEO)")
        opts = dict(options)
        if opts.get("tuned") is not None:
            model.tuned = apply_delta(model.denoiser.net, Path(opts["tuned"]), model.base.digest)
        if not opts.get("prompt"):
            trained = json.loads(model.tuned.get("train_config", "{}")).get("prompt")
            if not trained:
                raise SvdError("tune_a_video needs --prompt (the edited text)")
            opts["prompt"] = trained
        if opts.get("invert") is not None and not Path(opts["invert"]).is_file():
            raise SvdError(f"--invert {opts['invert']}: no such video")
        opts.setdefault("invert", None)
        # --invert reads the clip as the run was tuned on it: every frame_stride-th frame (runs saved
        # before the key existed tuned on consecutive frames)
        tuned = json.loads(model.tuned.get("train_config", "{}"))
        opts["frame_stride"] = int(tuned.get("frame_stride", 1)) if tuned else TAVConfig().frame_stride
        return opts

    def sigmas(self, model, steps: int, device):
        from svdcli.families.tune_a_video.sampling import ddim_sigmas

        return ddim_sigmas(model.base.prediction, steps, device)

    def sampling_inputs(self, model, image, opts, device, dtype) -> SamplingInputs:
        import torch

        from svdcli.families.tune_a_video.network import make_cond
        from svdcli.families.tune_a_video.sampling import text_context

        h, w = opts.height // 8, opts.width // 8
        noise = torch.randn(opts.frames, 4, h, w, generator=torch.Generator().manual_seed(opts.seed))
        context = text_context(model, [opts.family_options["prompt"], ""], device)
        cond = make_cond(context[:1], opts.frames, model.base, (h, w))
        uncond = make_cond(context[1:], opts.frames, model.base, (h, w))
        notes = [] if model.tuned else ["no --tuned delta: sampling the inflated, untuned image model"]
        return SamplingInputs(noise.to(device), cond, uncond, fps=8.0, notes=notes)

    def guided_denoiser(self, model, opts, autocast_dtype):
        from svdcli.families.tune_a_video.sampling import cfg_denoiser

        return cfg_denoiser(model.denoiser, opts.frames, opts.max_cfg)

    def sample(self, model, inputs, opts, denoiser, sigmas, callback):
        from svdcli.diffusion.samplers import prior_sample
        from svdcli.families.tune_a_video.sampling import invert, read_clip, run_ddim, source_latents

        source = opts.family_options.get("invert")
        if source is None:
            x = prior_sample(inputs.noise.float(), sigmas)
        else:
            video = read_clip(Path(source), opts.frames, opts.height, opts.width, opts.family_options["frame_stride"])
            x0 = source_latents(model, video, inputs.noise.device)
            x = invert(model, x0, inputs.uncond, sigmas, opts.frames, callback)
        return run_ddim(model, x, denoiser, sigmas, inputs.cond, inputs.uncond, callback)

    def sampling_steps(self, model, opts) -> int:
        inverted = opts.family_options.get("invert") is not None
        return opts.steps * (2 if inverted else 1) - (1 if inverted and model.base.prediction == "edm" else 0)

    def decode(self, model, x, opts):
        from svdcli.models.vae import SCALE_FACTOR

        vae = model.base.vae
        return vae.decode(x.to(next(vae.parameters()).dtype) / SCALE_FACTOR, opts.frames).clamp(-1.0, 1.0)
