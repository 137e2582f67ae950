"""Video Diffusion Models (Ho, Salimans, Gritsenko, Chan, Norouzi, Fleet; 2022, arXiv 2204.03458):
a pixel-space U-Net factorised over space and time, continuous-time cosine diffusion with eps
or v prediction, joint image-video training, ancestral sampling, and conditional sampling from
the unconditional model by reconstruction guidance (extension, super-resolution).

    config.py     the family's training-config keys and the network presets (tiny, base)
    network.py    the space-time U-Net (1x3x3 convs, spatial + relative-position temporal attention)
    text.py       optional text towers (tiny seeded, or OpenCLIP ViT-H-14 from local weights)
    training.py   joint image-video batches, noise levels, the eps / v loss
    guidance.py   reconstruction guidance (eq. 7) and the replacement baseline, as pure samplers
    sampling.py   loading, options, noise, the sampling loops of `svd sample`
This module imports no torch.
"""
from __future__ import annotations

from pathlib import Path

from svdcli.families.base import Family, TrainBatch
from svdcli.families.vdm.config import VDMConfig

FORMAT = "svdcli-vdm"   # `format` metadata of the files `save` writes


class VDMFamily(Family):
    name = "vdm"
    stages = ("video",)
    config_type = VDMConfig

    def validate(self, cfg) -> None:
        from svdcli.families.vdm.config import validate

        validate(cfg)

    # --- training ------------------------------------------------------------------------
    def build(self, cfg, init: Path | None = None):
        from svdcli.families.vdm.sampling import build_denoiser

        denoiser = build_denoiser(cfg.family_config, cfg.seed)
        if init is not None:
            denoiser.load_state_dict(self.saved_state(init), strict=True)
        return denoiser

    def encoders(self, cfg, device: str):
        """The frozen text tower (`text:`), or None."""
        from svdcli.families.vdm.text import build_text_tower

        own = cfg.family_config
        tower = build_text_tower(own.text, own.text_dim, cfg.seed)
        return None if tower is None else tower.to(device)

    def prepare(self, video, meta, encoders, cfg, gen, device) -> TrainBatch:
        from svdcli.families.vdm.training import prepare

        return prepare(video, meta, encoders, cfg, gen, device)

    def training_sigmas(self, n: int, cfg, gen):
        """sigma(t), t ~ U(0, 1) on the cosine schedule (continuous time, VDM sec. 2)."""
        from svdcli.families.vdm.training import training_sigmas

        return training_sigmas(n, cfg, gen)

    def loss(self, denoiser, batch: TrainBatch, sigma, noise):
        """Per-video ||eps - eps_hat||^2 or ||v - v_hat||^2 (the parameterisation the net was built with)."""
        from svdcli.families.vdm.training import loss

        module = getattr(denoiser, "module", denoiser)   # the DeepSpeed engine wraps the denoiser
        return loss(denoiser, batch, sigma, noise, module.parameterisation)

    # --- checkpoints ---------------------------------------------------------------------
    def save(self, path: Path, state, cfg, metadata: dict[str, str]) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": FORMAT, **metadata})

    def saved_state(self, path: Path):
        from safetensors.torch import load_file

        return load_file(str(path))

    def load(self, header):
        from svdcli.families.vdm.sampling import load

        return load(self, header)

    # --- sampling ------------------------------------------------------------------------
    option_names = ("prompt", "input", "extend", "upsample", "guidance_weight", "conditioning")
    sampler_names = ("ancestral",)

    def resolve_options(self, model, options: dict, image, warn) -> dict:
        from svdcli.families.vdm.sampling import resolve_options

        self.check_option_names(options)
        return resolve_options(model, options, image)

    def sigmas(self, model, steps: int, device):
        """t = 1, (n-1)/n, ..., 1/n on the model's cosine schedule, then 0."""
        return model.denoiser.schedule.sigmas(steps).to(device)

    def sampling_inputs(self, model, image, opts, device, dtype):
        from svdcli.families.vdm.sampling import sampling_inputs

        return sampling_inputs(model, opts, device, dtype)

    def guided_denoiser(self, model, opts, autocast_dtype):
        from svdcli.families.vdm.sampling import guided_denoiser

        return guided_denoiser(model, opts)

    def sample(self, model, inputs, opts, denoiser, sigmas, callback):
        from svdcli.families.vdm.sampling import sample

        return sample(model, inputs, opts, denoiser, sigmas, callback)

    def sampling_steps(self, model, opts) -> int:
        from svdcli.families.vdm.sampling import sampling_steps

        return sampling_steps(opts)

    def decode(self, model, x, opts):
        """Pixel space: the sample is the video."""
        return x.float().clamp(-1.0, 1.0)
