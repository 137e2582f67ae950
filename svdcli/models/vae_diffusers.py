"""Key conversion between our (sgm-named) autoencoder and diffusers' naming.

Covers `AutoencoderKLTemporalDecoder` (SVD's VAE in diffusers) and the plain `AutoencoderKL`.
diffusers' temporal-decoder VAE carries a `quant_conv` that the official checkpoint does not
have: converting from diffusers folds it into `encoder.conv_out` (a 1x1 conv after a conv is
one conv), converting to diffusers writes an identity `quant_conv`. Attention projections are
1x1 convs here and Linear layers there.

The renaming is one table of rules read in both directions (`_RULES`): a block path in each
naming, with `{i}` / `{j}` indices and the parameter path `{rest}`; decoder up-block indices run
the other way round in diffusers, mid-block resnets are 1-based in sgm.
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

# (ours, diffusers, how `{rest}` is renamed, how `{i}` maps): tried in order, first match wins
_RULES = (
    ("mid.block_{i}.{rest}", "mid_block.resnets.{i}.{rest}", _RESNET, "one_based"),
    ("mid.attn_1.{rest}", "mid_block.attentions.0.{rest}", _ATTN, None),
    ("down.{i}.block.{j}.{rest}", "down_blocks.{i}.resnets.{j}.{rest}", _RESNET, None),
    ("down.{i}.downsample.{rest}", "down_blocks.{i}.downsamplers.0.{rest}", {}, None),
    # diffusers numbers decoder stages from the lowest resolution, sgm from full resolution
    ("up.{i}.block.{j}.{rest}", "up_blocks.{i}.resnets.{j}.{rest}", _RESNET, "reversed"),
    ("up.{i}.upsample.{rest}", "up_blocks.{i}.upsamplers.0.{rest}", {}, "reversed"),
    ("{rest}", "{rest}", _TOP, None),
)


def _pattern(template: str) -> re.Pattern:
    regex = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{j\}", r"(?P<j>\d+)")
    return re.compile(regex.replace(r"\{rest\}", r"(?P<rest>.+)"))


_COMPILED = [(_pattern(ours), _pattern(theirs), ours, theirs, table, index)
             for ours, theirs, table, index in _RULES]


def _rename(tail: str, table: dict[str, str]) -> str:
    """Replace the longest table entry that `tail` starts with (whole dotted components)."""
    for old in sorted(table, key=len, reverse=True):
        if tail == old or tail.startswith(old + "."):
            return table[old] + tail[len(old):]
    return tail


def _index(i: str, how: str | None, levels: int, to_diffusers: bool) -> int:
    if how == "one_based":
        return int(i) - 1 if to_diffusers else int(i) + 1
    if how == "reversed":
        return levels - 1 - int(i)
    return int(i)


def _resnet_tail(tail: str, video: bool, to_diffusers: bool) -> str:
    """A resnet's parameter path; in the video decoder diffusers wraps the 2-D parts of a
    SpatioTemporalResBlock as `spatial_res_block`."""
    if not to_diffusers:
        return _rename(tail.removeprefix("spatial_res_block."), {v: k for k, v in _RESNET.items()})
    new = _rename(tail, _RESNET)
    if video and not new.startswith(("temporal_res_block.", "time_mixer.")):
        new = "spatial_res_block." + new
    return new


def _translate(key: str, levels: int, video: bool, to_diffusers: bool) -> str:
    """One encoder / decoder key in the other naming (quant_conv / post_quant_conv stay)."""
    part, _, rest = key.partition(".")
    if part not in ("encoder", "decoder"):
        return key
    video = video and part == "decoder"
    for ours, theirs, ours_t, theirs_t, table, how in _COMPILED:
        source, target = (ours, theirs_t) if to_diffusers else (theirs, ours_t)
        m = source.fullmatch(rest)
        if m is None:
            continue
        fields = m.groupdict()
        if "i" in fields:
            fields["i"] = _index(fields["i"], how, levels, to_diffusers)
        if table is _RESNET:
            fields["rest"] = _resnet_tail(fields["rest"], video, to_diffusers)
        else:
            fields["rest"] = _rename(fields["rest"], table if to_diffusers else {v: k for k, v in table.items()})
        return f"{part}.{target.format(**fields)}"
    raise AssertionError("the last rule matches every key")


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
        out[_translate(key, levels, temporal, True)] = value[:, :, 0, 0] if _is_attn_weight(key) else value
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
        ours = _translate(key, levels, False, False)
        out[ours] = value[:, :, None, None] if _is_attn_weight(ours) and value.dim() == 2 else value
    if not keep_quant_conv and "quant_conv.weight" in out:
        q = out.pop("quant_conv.weight")[:, :, 0, 0].double()  # (2z, 2z)
        qb = out.pop("quant_conv.bias").double()
        w, b = out["encoder.conv_out.weight"], out["encoder.conv_out.bias"]
        # quant_conv(conv_out(h)) = (Q W) * h + (Q b + q_b)
        out["encoder.conv_out.weight"] = torch.einsum("om,mikl->oikl", q, w.double()).to(w.dtype)
        out["encoder.conv_out.bias"] = (q @ b.double() + qb).to(b.dtype)
    return out
