"""A Video LDM training batch: the SVD text-to-video batch (latents, caption embedding with
condition dropout, Sec. 3.1) plus, for the prediction and interpolation models, the mask
conditioning c_S of the frames given as context (Sec. 3.2, 3.3). Every draw comes from `gen`."""
from __future__ import annotations

import torch

from svdcli.families.base import TrainBatch
from svdcli.families.video_ldm.network import context_channels


def context_mask(stage: str, b: int, t: int, own, gen: torch.Generator) -> torch.Tensor | None:
    """(B, T) binary mask of the given frames, or None for the plain video model.

    predict: the first S frames, S drawn uniformly from {0, ..., max_context_frames} per video (S = 0 is the
    unconditional branch of the context guidance). interpolate: every `interpolation_factor`-th
    frame (the keyframes), dropped for a whole video with prob. `context_dropout`.
    """
    if stage == "predict":
        s = torch.randint(own.max_context_frames + 1, (b,), generator=gen)            # (B,)
        return (torch.arange(t)[None, :] < s[:, None]).float()
    if stage == "interpolate":
        keys = (torch.arange(t) % own.interpolation_factor == 0).float()
        keep = (torch.rand(b, generator=gen) >= own.context_dropout).float()
        return keep[:, None] * keys[None, :]
    return None


def prepare_batch(video, meta, enc, cfg, gen, device) -> TrainBatch:
    from svdcli.families.svd.batch import prepare_batch as prepare_svd

    batch = prepare_svd(video, meta, enc, cfg, gen, device)
    if "vector" in batch.cond:  # Video LDM has no fps / motion micro-conditioning: held at zero
        batch.cond["vector"] = torch.zeros_like(batch.cond["vector"])
    b, t = video.shape[:2]
    mask = context_mask(cfg.stage, b, t, cfg.family_config, gen)
    if mask is not None:
        c_s = context_channels(batch.x0, mask.reshape(-1).to(batch.x0.device))      # (B*T, 5, h, w)
        batch.cond["concat"] = torch.cat([batch.cond["concat"], c_s], dim=1)
    return batch


def prepare_decoder_batch(video, cfg, gen, device) -> TrainBatch:
    """The decoder stage: x0 the clean frames (B*T, 3, H, W), and the posterior's eps
    (B*T, z, H/8, W/8) for z = mu + sigma * eps (zeros when data.posterior is "mode")."""
    from svdcli.models.vae import VAEConfig

    b, t, c, h, w = video.shape
    frames = video.reshape(b * t, c, h, w).to(device)
    f, z = VAEConfig().downsampling, VAEConfig().z_channels
    shape = (b * t, z, h // f, w // f)
    eps = torch.randn(shape, generator=gen) if cfg.data.posterior == "sample" else torch.zeros(shape)
    return TrainBatch(x0=frames, cond={"posterior_noise": eps.to(device)}, frames=t)
