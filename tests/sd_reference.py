"""Tiny random Stable Diffusion 2.x models built in diffusers and written in SD's single-file
(ldm) layout, the layout the families read SD files in: the reference side of the families'
reference checks. The weights are random on every path (no zeroed output layers), so a wrong
key, scaling or time label changes the outputs.

- `tiny_unet(seed, **overrides)`: a diffusers `UNet2DConditionModel` in SD 2.x's layout
  (cross-attention on the first three levels, linear projections), sized like
  `UNetConfig.tiny(in_channels=4, adm_in_channels=None)`: level channels 32/32/32/64, 16-channel
  heads, text width 40. `TAV_UNET` overrides it into the three-level, 64-channel-head model the
  Tune-A-Video checks use (text width 32: the `text: tiny` tower's).
- `tiny_upscaler_unet(seed)`: the same size in the layout of SD 2.x's x4 upscaler (7 input
  channels: 4 latent + 3 low-resolution pixels, noise level as class label, no attention on the
  first level, self-attention replaced by cross-attention on levels 1-2, 2 heads everywhere).
- `tiny_vae(seed, levels)`: a diffusers `AutoencoderKL` (4 levels: SD's f8; 3: the upscaler's f4).
- `unet_to_ldm`, `vae_to_ldm`: diffusers names -> ldm names. Each checks itself by converting
  back with diffusers' own single-file converter, which must give the diffusers state exactly.
- `write_sd_file(path, unet, vae)`: `model.diffusion_model.*` + `first_stage_model.*`.
- `transformer_blocks(unet)`: the ldm path of every transformer block -> the block.
- `sd_scheduler(prediction)`: diffusers' `DDIMScheduler` with SD 2.x's configuration.
"""
from __future__ import annotations

from pathlib import Path

import torch

from random_weights import randomize_

TINY_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(32, 32, 32, 64),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=(2, 2, 2, 4),     # diffusers' SD configs give head COUNTS here: 16-channel heads
    cross_attention_dim=40, use_linear_projection=True, norm_num_groups=32,
    flip_sin_to_cos=True, freq_shift=0,
)
TINY_UPSCALER_UNET = dict(
    sample_size=8, in_channels=7, out_channels=4, layers_per_block=2,
    block_out_channels=(32, 32, 32, 64),
    down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 3,
    up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",),
    only_cross_attention=(True, True, True, False),
    attention_head_dim=2, num_class_embeds=1000,
    cross_attention_dim=40, use_linear_projection=True, norm_num_groups=32,
    flip_sin_to_cos=True, freq_shift=0,
)
TAV_UNET = dict(   # heads of 64 channels, what `infer_unet_config` assumes for an SD 2.x file
    block_out_channels=(64, 128, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(1, 2, 2), cross_attention_dim=32,
)
# SD 2.x's scheduler config (stabilityai/stable-diffusion-2-1 scheduler_config.json)
SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                   clip_sample=False, set_alpha_to_one=False, steps_offset=1)
# the x4 upscaler's (stabilityai/stable-diffusion-x4-upscaler): main and low-resolution schedules
UPSCALER_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="scaled_linear")


def tiny_unet(seed: int = 0, **overrides):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**{**TINY_UNET, **overrides})
    randomize_(unet, seed)
    return unet.eval()


def tiny_upscaler_unet(seed: int = 0, **overrides):
    return tiny_unet(seed, **{**TINY_UPSCALER_UNET, **overrides})


def tiny_vae(seed: int = 0, levels: int = 4):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    channels = (32, 32, 32, 64)[-levels:]
    vae = AutoencoderKL(block_out_channels=channels, down_block_types=("DownEncoderBlock2D",) * levels,
                        up_block_types=("UpDecoderBlock2D",) * levels, layers_per_block=2,
                        latent_channels=4, norm_num_groups=32)
    randomize_(vae, seed)
    return vae.eval()


def sd_scheduler(prediction: str):
    """diffusers' DDIMScheduler as SD 2.x configures it; prediction "v" or "eps"."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**SD_SCHEDULE, prediction_type="v_prediction" if prediction == "v" else "epsilon")


# --- diffusers -> ldm names -----------------------------------------------------------------
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "class_embedding": "label_emb"}


def _unet_name(key: str, config) -> str:
    n = config["layers_per_block"]
    p = key.split(".")
    layer, param = ".".join(p[:-1]), p[-1]
    if layer in _UNET_TOP:
        return f"{_UNET_TOP[layer]}.{param}"
    if p[0] == "mid_block":
        j = int(p[2])
        block = f"middle_block.{2 * j if p[1] == 'resnets' else 1}"
        rest = p[3:]
    elif p[0] == "down_blocks":
        i = int(p[1])
        if p[2] == "downsamplers":           # down_blocks.i.downsamplers.0.conv.*
            return f"input_blocks.{(i + 1) * (n + 1)}.0.op.{param}"
        j = int(p[3])
        block = f"input_blocks.{1 + i * (n + 1) + j}.{0 if p[2] == 'resnets' else 1}"
        rest = p[4:]
    elif p[0] == "up_blocks":
        i = int(p[1])
        if p[2] == "upsamplers":             # after the block's resnet (and attention, if any)
            has_attn = config["up_block_types"][i].startswith("CrossAttn")
            return f"output_blocks.{i * (n + 1) + n}.{2 if has_attn else 1}.conv.{param}"
        j = int(p[3])
        block = f"output_blocks.{i * (n + 1) + j}.{0 if p[2] == 'resnets' else 1}"
        rest = p[4:]
    else:
        raise KeyError(key)
    if ".resnets." in key:
        rest = [_RESNET[rest[0]], *rest[1:]]
    return ".".join([block, *rest])


def unet_to_ldm(state: dict, config) -> dict:
    """A diffusers UNet state dict in ldm names (`input_blocks.*`, ...), checked by converting it
    back with diffusers' `convert_ldm_unet_checkpoint`."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    out = {_unet_name(k, config): v for k, v in state.items()}
    back = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: v for k, v in out.items()}, dict(config))
    assert set(back) == set(state), sorted(set(back) ^ set(state))[:5]
    assert all(back[k] is state[k] or torch.equal(back[k], state[k]) for k in state)  # copies, not computed
    return out


def _vae_name(key: str, levels: int) -> str:
    p = key.split(".")
    if p[0] in ("quant_conv", "post_quant_conv") or p[1] in ("conv_in", "conv_out"):
        return key
    if p[1] == "conv_norm_out":
        return f"{p[0]}.norm_out.{p[2]}"
    if p[1] == "mid_block":
        if p[2] == "resnets":
            rest = ["nin_shortcut" if p[4] == "conv_shortcut" else p[4], *p[5:]]
            return ".".join([p[0], "mid", f"block_{int(p[3]) + 1}", *rest])
        attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}[p[4]]
        return f"{p[0]}.mid.attn_1.{attn}.{p[-1]}"
    i = int(p[2])
    level = i if p[1] == "down_blocks" else levels - 1 - i       # the decoder counts levels upwards
    kind = "down" if p[1] == "down_blocks" else "up"
    if p[3] in ("downsamplers", "upsamplers"):
        return f"{p[0]}.{kind}.{level}.{'downsample' if kind == 'down' else 'upsample'}.conv.{p[-1]}"
    sub = "nin_shortcut" if p[5] == "conv_shortcut" else p[5]
    return ".".join([p[0], kind, str(level), "block", p[4], sub, *p[6:]])


def vae_to_ldm(state: dict, config) -> dict:
    """A diffusers AutoencoderKL state dict in ldm names (`encoder.down.0.block.0.*`, attention as
    1x1 convolutions), checked by converting it back with `convert_ldm_vae_checkpoint`."""
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    levels = len(config["down_block_types"])
    out = {}
    for k, v in state.items():
        name = _vae_name(k, levels)
        out[name] = v[:, :, None, None] if ".mid.attn_1." in name and v.ndim == 2 else v   # linear -> 1x1 conv
    back = convert_ldm_vae_checkpoint({"first_stage_model." + k: v for k, v in out.items()}, dict(config))
    assert set(back) == set(state), sorted(set(back) ^ set(state))[:5]
    assert all(torch.equal(back[k].reshape(state[k].shape), state[k]) for k in state)  # copies, not computed
    return out


def transformer_blocks(unet) -> dict[str, torch.nn.Module]:
    """The ldm path of every BasicTransformerBlock (`input_blocks.1.1.transformer_blocks.0`) -> the block."""
    from diffusers.models.attention import BasicTransformerBlock

    return {_unet_name(name + ".x", unet.config)[: -len(".x")]: m for name, m in unet.named_modules()
            if isinstance(m, BasicTransformerBlock)}


def write_sd_file(path: Path, unet, vae=None) -> Path:
    """An SD single file: the UNet under `model.diffusion_model.`, the VAE under `first_stage_model.`."""
    from safetensors.torch import save_file

    flat = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    if vae is not None:
        flat.update({"first_stage_model." + k: v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    return path
