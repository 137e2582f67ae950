"""A Video LDM training batch: latents x0, the caption embedding with condition dropout (Sec. 3.1)
and, for the prediction and interpolation models, the mask conditioning c_S of the frames given
as context (Sec. 3.2, 3.3). Every draw comes from `gen`.

What the frozen image model sees is what it was trained with (image_base.py):
- the dropped caption (classifier-free guidance) is the empty prompt's embedding for an SD 2.x
  model, a zeroed embedding for ours (as `svd train --stage image` drops it);
- our image stage's UNet has a micro-conditioning `vector` input (fps_id, motion_bucket_id,
  cond_aug), trained with each clip's fps_id and motion bucket and cond_aug 0 (text-to-image has
  no conditioning frame). Its label_emb stays frozen here, so the video stages feed the same
  values, from the same clip metadata; SD 2.x has no such input;
- our image stage's UNet takes 4 zero concat channels (the image-to-video frame slot); SD's none.
"""
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


def text_embedding(enc, captions: list[str], keep: torch.Tensor, own, device) -> torch.Tensor:
    """(B, L, D): the captions kept, the image model's unconditional text for the others."""
    from svdcli.families.video_ldm.image_base import is_sd

    if own.cond.mode != "t2v":
        return torch.zeros(len(captions), 1, enc.context_dim, device=device)
    if is_sd(own):                         # SD: the empty prompt is the unconditional branch
        return enc.embed_text([c if k else "" for c, k in zip(captions, keep.tolist())]).float()
    return enc.embed_text(captions).float() * keep.to(device)[:, None, None]


def micro_conditioning(meta: dict, b: int, dim: int, device) -> torch.Tensor:
    """(B, 3 dim): our image stage's vector of each clip's fps_id and motion bucket, cond_aug 0."""
    from svdcli.models.conditioner import vector_embedding

    return vector_embedding(meta["fps_id"], meta["motion_bucket_id"], torch.zeros(b), dim=dim).to(device)


@torch.no_grad()
def prepare_batch(video, meta, enc, cfg, gen, device) -> TrainBatch:
    """(B, T, C, H, W) in [-1, 1] -> x0 (B*T, 4, h, w), cond; c_S rides after the concat channels."""
    from svdcli.families.svd.batch import _target_latents
    from svdcli.families.video_ldm.image_base import network_config

    own = cfg.family_config
    b, t = video.shape[:2]
    x0 = _target_latents(video, meta, enc, cfg, gen, device)
    keep = (torch.rand(b, generator=gen) >= own.cond.dropout) & (torch.rand(b, generator=gen) >= own.cond.text_dropout)
    captions = list(meta["caption"]) if own.cond.mode == "t2v" else [""] * b
    cond = {"crossattn": text_embedding(enc, captions, keep, own, device).repeat_interleave(t, dim=0)}
    net = network_config(own)
    n_concat = net.in_channels - net.out_channels
    if n_concat:
        cond["concat"] = torch.zeros(b * t, n_concat, *x0.shape[-2:], device=device)
    if net.adm_in_channels is not None:
        cond["vector"] = micro_conditioning(meta, b, net.adm_in_channels // 3, device).repeat_interleave(t, dim=0)
    mask = context_mask(cfg.stage, b, t, own, gen)
    if mask is not None:
        c_s = context_channels(x0, mask.reshape(-1).to(x0.device))                # (B*T, 5, h, w)
        cond["concat"] = torch.cat([cond["concat"], c_s], dim=1) if "concat" in cond else c_s
    return TrainBatch(x0.float(), cond, t)


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
