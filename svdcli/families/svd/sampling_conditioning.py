"""Conditioning encoders for sampling: one call turns the image (or prompt) and the ids into
per-video (cond, uncond) dicts, whatever checkpoint format the weights came from.

Every encoder is called as `encode(image, *, fps_id, motion_bucket_id, cond_aug, noise, prompt,
temporal_prompt)`
with `image` (B, 3, H, W) in [-1, 1] (None for text-to-video) and `noise` the N(0, 1) tensor
added to the conditioning frame, and returns dicts of crossattn (B, L, D), vector (B, adm)
and concat (B, 4, H/8, W/8); text-to-video given a `temporal_prompt` adds temporal_crossattn
(B, L, D), the context of the temporal cross-attention layers (SVD paper sec. 6.4). The
unconditional branch zeroes crossattn, temporal_crossattn and concat and keeps vector, as the
official sampler's `force_uc_zero_embeddings` does.
"""
from __future__ import annotations

import torch
from torch import nn

from svdcli.errors import SvdError

Conds = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


def _uncond(cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v if k == "vector" else torch.zeros_like(v) for k, v in cond.items()}


def _no_prompt(prompt: str | None, what: str, temporal_prompt: str | None = None) -> None:
    if prompt is not None or temporal_prompt is not None:
        flag = "--prompt" if prompt is not None else "--temporal-prompt"
        raise SvdError(f"{flag} needs a text-conditioned checkpoint; this {what} checkpoint is "
                       "conditioned on an image (use --image)")


def _need_image(image) -> None:
    if image is None:
        raise SvdError("this checkpoint is conditioned on an image: pass --image")


class OfficialConditioning:
    """sgm's conditioner (official files and our own single files): svdcli.models.conditioner."""

    def __init__(self, conditioner: nn.Module):
        self.conditioner = conditioner
        self.modules = [conditioner]

    def __call__(self, image, *, fps_id, motion_bucket_id, cond_aug, noise, prompt=None,
                 temporal_prompt=None) -> Conds:
        _no_prompt(prompt, "image-to-video", temporal_prompt)
        _need_image(image)
        return self.conditioner(image, fps_id, motion_bucket_id, cond_aug, noise=noise)


class TrainedConditioning:
    """The encoders a `svd train` run used (svdcli.families.svd.encoders), so sampling sees what training saw."""

    def __init__(self, encoders, mode: str):
        self.enc, self.mode = encoders, mode
        self.modules = [m for m in (encoders.encode_cond_frame, encoders.embed_image, encoders.embed_text)
                        if isinstance(m, nn.Module)]

    def __call__(self, image, *, fps_id, motion_bucket_id, cond_aug, noise, prompt=None,
                 temporal_prompt=None) -> Conds:
        from svdcli.models.conditioner import vector_embedding

        enc = self.enc
        if self.mode == "t2v":
            if prompt is None:
                raise SvdError("this checkpoint is text-conditioned: pass --prompt \"...\"")
            crossattn = enc.embed_text([prompt]).float()  # (1, L, D)
            if temporal_prompt is not None:
                temporal = enc.embed_text([temporal_prompt]).float()  # (1, L, D)
            concat = None
            cond_aug = 0.0  # text-to-video trains without a conditioning frame
        elif self.mode == "i2v":
            _no_prompt(prompt, "image-to-video", temporal_prompt)
            _need_image(image)
            crossattn = enc.embed_image(image).float()
            crossattn = crossattn[:, None] if crossattn.ndim == 2 else crossattn  # (B, 1, D)
            concat = enc.encode_cond_frame(image + cond_aug * noise).float()
        else:
            crossattn, concat = None, None
        b = 1 if image is None else image.shape[0]
        device = next(enc.vae.parameters()).device
        if crossattn is None:
            crossattn = torch.zeros(b, 1, enc.context_dim, device=device)
        if concat is None:
            z = enc.vae.cfg.z_channels
            f = enc.vae.cfg.downsampling
            h, w = noise.shape[-2] // f, noise.shape[-1] // f
            concat = torch.zeros(b, z, h, w, device=device)
        cond = {"crossattn": crossattn, "concat": concat}
        if self.mode == "t2v" and temporal_prompt is not None:
            cond["temporal_crossattn"] = temporal
        if enc.adm_in_channels is not None:
            ids = [torch.full((b,), float(v), device=device) for v in (fps_id, motion_bucket_id, cond_aug)]
            cond["vector"] = vector_embedding(*ids, dim=enc.adm_in_channels // 3)
        return cond, _uncond(cond)


class DiffusersConditioning:
    """A diffusers folder: transformers CLIP image tower, the folder's VAE for the frame latent."""

    def __init__(self, image_encoder: nn.Module, vae: nn.Module, adm_in_channels: int | None):
        self.image_encoder, self.vae, self.adm = image_encoder, vae, adm_in_channels
        self.modules = [image_encoder]

    def __call__(self, image, *, fps_id, motion_bucket_id, cond_aug, noise, prompt=None,
                 temporal_prompt=None) -> Conds:
        from svdcli.models.conditioner import CLIP_MEAN, CLIP_STD, resize_antialiased, vector_embedding

        _no_prompt(prompt, "image-to-video", temporal_prompt)
        _need_image(image)
        size = self.image_encoder.config.image_size
        x = (resize_antialiased(image.float(), (size, size)) + 1.0) / 2.0
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        dtype = next(self.image_encoder.parameters()).dtype
        embeds = self.image_encoder(((x - mean) / std).to(dtype)).image_embeds  # (B, D)
        # the VAE's encoder has diffusers' quant_conv folded in: its mode is diffusers' latent mode
        concat = self.vae.encode(image + cond_aug * noise).float()
        cond = {"crossattn": embeds.float()[:, None], "concat": concat}
        if self.adm:
            cond["vector"] = vector_embedding(fps_id, motion_bucket_id, cond_aug, dim=self.adm // 3)
            cond["vector"] = cond["vector"].expand(image.shape[0], -1).to(image.device)
        return cond, _uncond(cond)
