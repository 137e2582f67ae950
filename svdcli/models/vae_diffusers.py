"""Key conversion between our (sgm-named) autoencoder and diffusers' naming.

Covers `AutoencoderKLTemporalDecoder` (SVD's VAE in diffusers) and the plain `AutoencoderKL`.
diffusers' temporal-decoder VAE carries a `quant_conv` that the official checkpoint does not
have: converting from diffusers folds it into `encoder.conv_out` (a 1x1 conv after a conv is
one conv), converting to diffusers writes an identity `quant_conv`. Attention projections are
1x1 convs here and Linear layers there.
"""
from __future__ import annotations

import re

import torch

# resnet sub-module names: ours -> diffusers (temporal parts only exist in the video decoder)
_RESNET = {
    "nin_shortcut": "conv_shortcut",
    "time_stack.in_layers.0": "temporal_res_block.norm1",
    "time_stack.in_layers.2": "temporal_res_block.conv1",
    "time_stack.out_layers.0": "temporal_res_block.norm2",
    "time_stack.out_layers.3": "temporal_res_block.conv2",
    "mix_factor": "time_mixer.mix_factor",
}
_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_TOP = {"norm_out": "conv_norm_out", "conv_out.time_mix_conv": "time_conv_out"}


def _rename(tail: str, table: dict[str, str]) -> str:
    """Replace the longest table entry that `tail` starts with (whole dotted components)."""
    for old in sorted(table, key=len, reverse=True):
        if tail == old or tail.startswith(old + "."):
            return table[old] + tail[len(old):]
    return tail


def _resnet_to_diffusers(tail: str, temporal: bool) -> str:
    new = _rename(tail, _RESNET)
    if temporal and not new.startswith(("temporal_res_block.", "time_mixer.")):
        new = "spatial_res_block." + new  # 2-D parts of a diffusers SpatioTemporalResBlock
    return new


def _resnet_from_diffusers(tail: str) -> str:
    tail = tail.removeprefix("spatial_res_block.")
    return _rename(tail, {v: k for k, v in _RESNET.items()})


def _key_to_diffusers(key: str, levels: int, temporal: bool) -> str:
    part, _, rest = key.partition(".")
    if part not in ("encoder", "decoder"):
        return key  # quant_conv / post_quant_conv
    video = temporal and part == "decoder"
    if m := re.fullmatch(r"mid\.block_(\d)\.(.+)", rest):
        return f"{part}.mid_block.resnets.{int(m[1]) - 1}.{_resnet_to_diffusers(m[2], video)}"
    if m := re.fullmatch(r"mid\.attn_1\.(.+)", rest):
        return f"{part}.mid_block.attentions.0.{_rename(m[1], _ATTN)}"
    if m := re.fullmatch(r"down\.(\d+)\.block\.(\d+)\.(.+)", rest):
        return f"{part}.down_blocks.{m[1]}.resnets.{m[2]}.{_resnet_to_diffusers(m[3], False)}"
    if m := re.fullmatch(r"down\.(\d+)\.downsample\.(.+)", rest):
        return f"{part}.down_blocks.{m[1]}.downsamplers.0.{m[2]}"
    # diffusers numbers decoder stages from the lowest resolution, sgm from full resolution
    if m := re.fullmatch(r"up\.(\d+)\.block\.(\d+)\.(.+)", rest):
        i = levels - 1 - int(m[1])
        return f"{part}.up_blocks.{i}.resnets.{m[2]}.{_resnet_to_diffusers(m[3], video)}"
    if m := re.fullmatch(r"up\.(\d+)\.upsample\.(.+)", rest):
        return f"{part}.up_blocks.{levels - 1 - int(m[1])}.upsamplers.0.{m[2]}"
    return f"{part}.{_rename(rest, _TOP)}"


def _key_from_diffusers(key: str, levels: int) -> str:
    part, _, rest = key.partition(".")
    if part not in ("encoder", "decoder"):
        return key
    if m := re.fullmatch(r"mid_block\.resnets\.(\d)\.(.+)", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{_resnet_from_diffusers(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{part}.mid.attn_1.{_rename(m[1], {v: k for k, v in _ATTN.items()})}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.down.{m[1]}.block.{m[2]}.{_resnet_from_diffusers(m[3])}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.(.+)", rest):
        return f"{part}.down.{m[1]}.downsample.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.up.{levels - 1 - int(m[1])}.block.{m[2]}.{_resnet_from_diffusers(m[3])}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"{part}.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
    return f"{part}.{_rename(rest, {v: k for k, v in _TOP.items()})}"


def _levels(keys, pattern: str) -> int:
    found = {int(m[1]) for k in keys if (m := re.match(pattern, k))}
    if not found:
        raise ValueError("not an autoencoder state dict: no encoder down blocks found")
    return max(found) + 1


def _is_attn_weight(key: str) -> bool:
    return ".mid.attn_1." in key and key.endswith(".weight") and ".norm." not in key


def vae_state_to_diffusers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict (no prefix) -> diffusers names; adds an identity quant_conv if absent."""
    levels = _levels(sd, r"encoder\.down\.(\d+)\.")
    temporal = any(k.startswith("decoder.") and "time_stack" in k for k in sd)
    out = {}
    for key, value in sd.items():
        out[_key_to_diffusers(key, levels, temporal)] = value[:, :, 0, 0] if _is_attn_weight(key) else value
    if "quant_conv.weight" not in sd:
        w = sd["encoder.conv_out.weight"]
        z2 = w.shape[0]
        out["quant_conv.weight"] = torch.eye(z2, dtype=w.dtype, device=w.device)[:, :, None, None]
        out["quant_conv.bias"] = torch.zeros(z2, dtype=w.dtype, device=w.device)
    return out


def vae_state_from_diffusers(sd: dict[str, torch.Tensor], *, keep_quant_conv: bool = False
                             ) -> dict[str, torch.Tensor]:
    """diffusers names -> ours. quant_conv is folded into encoder.conv_out unless kept.

    Keep it (`keep_quant_conv=True`) for `ImageAutoencoder`, which has its own quant_conv.
    """
    levels = _levels(sd, r"encoder\.down_blocks\.(\d+)\.")
    out = {}
    for key, value in sd.items():
        ours = _key_from_diffusers(key, levels)
        out[ours] = value[:, :, None, None] if _is_attn_weight(ours) and value.dim() == 2 else value
    if not keep_quant_conv and "quant_conv.weight" in out:
        q = out.pop("quant_conv.weight")[:, :, 0, 0].double()  # (2z, 2z)
        qb = out.pop("quant_conv.bias").double()
        w, b = out["encoder.conv_out.weight"], out["encoder.conv_out.bias"]
        # quant_conv(conv_out(h)) = (Q W) * h + (Q b + q_b)
        out["encoder.conv_out.weight"] = torch.einsum("om,mikl->oikl", q, w.double()).to(w.dtype)
        out["encoder.conv_out.bias"] = (q @ b.double() + qb).to(b.dtype)
    return out
