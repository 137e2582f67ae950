"""An SVD training batch: loader frames -> target latents x0 and the cond dict (sgm's
GeneralConditioner at training time), with condition dropout for classifier-free guidance.

- x0: VAE posterior sample (data.posterior: mode -> the mode) of every frame times 0.18215,
  video-major (B*T, 4, h, w); with data.latents, the loader's stored latents (the mode, fp16)
  of the same frames, and the VAE encoder is not run for them.
- i2v: concat = VAE posterior MODE of (first frame + cond_aug * n), not scaled, repeated over
  T; crossattn = image embedding of the first frame (B*T, 1, D); cond_aug ~ lognormal.
- t2v: crossattn = text embedding of the caption (B*T, L, D); concat zero.
- vector = sinusoidal embeddings of (fps_id, motion_bucket_id, cond_aug), concatenated; the
  multiview stage appends the camera elevation's (SVD paper app. D.6, multiview.py).
- dropout: with prob p a sample's crossattn and concat are zeroed (vector kept), as the
  unconditional branch at sampling time.
All randomness comes from the step's generator, so a resumed run redraws the same values.
"""
from __future__ import annotations

import torch

from svdcli.families.base import TrainBatch
from svdcli.families.svd.encoders import Encoders
from svdcli.models.conditioner import vector_embedding


def sample_cond_aug(n: int, cond, gen: torch.Generator) -> torch.Tensor:
    """ln cond_aug ~ N(P_mean, P_std^2): noise level added to the conditioning frame (B,)."""
    return (cond.cond_aug_p_mean + cond.cond_aug_p_std * torch.randn(n, generator=gen)).exp()


def _repeat_frames(x: torch.Tensor, t: int) -> torch.Tensor:
    return x.repeat_interleave(t, dim=0)  # (B, ...) -> (B*T, ...), video-major


@torch.no_grad()
def prepare_batch(video: torch.Tensor, meta: dict, enc: Encoders, cfg, gen: torch.Generator,
                  device) -> TrainBatch:
    """(B, T, C, H, W) in [-1, 1] -> x0 (B*T, 4, h, w), cond, image_only_indicator (B, T);
    `cfg` is the training config (svdcli.train.config.TrainConfig).

    With data.latents, x0 comes from meta["latents"]; the conditioning-frame latent (i2v) is still
    encoded here: it is the VAE mode of the first frame plus fresh cond_aug noise, drawn per step,
    so it cannot be precomputed.
    """
    b, t = video.shape[:2]
    x0 = _target_latents(video, meta, enc, cfg, gen, device)
    first = video[:, 0].to(device)                                     # (B, C, H, W)
    cond_cfg = cfg.family_config.cond
    mode = cond_cfg.mode
    cond_aug = sample_cond_aug(b, cond_cfg, gen) if mode == "i2v" else torch.zeros(b)
    keep = (torch.rand(b, generator=gen) >= cond_cfg.dropout).float()  # CFG: zero cond with prob p
    h, w = x0.shape[-2:]
    concat = torch.zeros(b, x0.shape[1], h, w, device=device)
    if mode == "i2v":
        noisy = first + cond_aug.to(device)[:, None, None, None] * torch.randn(first.shape, generator=gen).to(device)
        concat = enc.encode_cond_frame(noisy).float()
        crossattn = enc.embed_image(first).float()                    # (B, 1, D)
    elif mode == "t2v":
        text_keep = (torch.rand(b, generator=gen) >= cond_cfg.text_dropout).float()
        keep = keep * text_keep
        crossattn = enc.embed_text(list(meta["caption"])).float()      # (B, L, D)
    else:
        crossattn = torch.zeros(b, 1, enc.context_dim, device=device)
    keep = keep.to(device)
    cond = {
        "crossattn": _repeat_frames(crossattn * keep[:, None, None], t),
        "concat": _repeat_frames(concat * keep[:, None, None, None], t),
    }
    if enc.adm_in_channels is not None:
        dim = enc.adm_in_channels // 3
        vec = vector_embedding(meta["fps_id"], meta["motion_bucket_id"], cond_aug, dim=dim)
        if cfg.stage == "multiview":
            from svdcli.families.svd.multiview import append_elevation

            vec = append_elevation(vec, meta["elevation_deg"], dim)
        cond["vector"] = _repeat_frames(vec.to(device), t)
    indicator = torch.full((b, t), 1.0 if cfg.stage == "image" else 0.0, device=device)
    return TrainBatch(x0.float(), cond, t, indicator)


def _target_latents(video: torch.Tensor, meta: dict, enc: Encoders, cfg,
                    gen: torch.Generator, device) -> torch.Tensor:
    """x0 = 0.18215 * VAE latent of every frame (B*T, 4, h, w): stored, or encoded now."""
    from svdcli.models.vae import SCALE_FACTOR

    b, t = video.shape[:2]
    if cfg.data.latents:
        stored = meta["latents"]                                      # (B, T, 4, h, w) float16, already scaled
        return stored.reshape(b * t, *stored.shape[2:]).to(device).float()
    frames = video.reshape(b * t, *video.shape[2:]).to(device)        # (B, T, C, H, W) -> (B*T, C, H, W)
    if cfg.data.posterior == "mode":
        return SCALE_FACTOR * enc.vae.encode(frames)
    return SCALE_FACTOR * enc.vae.encode(frames, sample=True, generator=_device_gen(gen, device))


def _device_gen(gen: torch.Generator, device) -> torch.Generator:
    """A generator on `device` seeded from the step's CPU generator (CUDA needs its own; meta
    tensors, which the planner traces, take the CPU one)."""
    if str(device) in ("cpu", "meta"):
        return gen
    seed = int(torch.randint(0, 2**62, (1,), generator=gen))
    return torch.Generator(device=device).manual_seed(seed)
