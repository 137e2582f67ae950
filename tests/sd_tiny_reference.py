"""Tiny random SD 2.x models built in diffusers and written in the SD single-file layout
(`model.diffusion_model.*`, `first_stage_model.*`) that the families read, so a family's output
can be held against diffusers' on the very same weights.

The UNet has SD 2.x's structure at toy width: cross-attention down blocks then a plain one,
two ResBlocks per level, linear transformer projections, 64-channel attention heads (what
`infer_unet_config` assumes for an SD 2.x file), random weights on every path (diffusers zeroes
nothing, but the scale of its default init leaves the output tiny; see `randomize_`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from random_weights import randomize_

CONTEXT_DIM = 32          # the tiny text tower's width (svdcli.families.tune_a_video.base: `text: tiny`)
PREDICTIONS = {"eps": "epsilon", "v": "v_prediction"}    # ours -> diffusers' prediction_type


def tiny_unet(seed: int = 0):
    """UNet2DConditionModel of SD 2.x's layout: block widths 64/128/128, heads of 64 channels."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(64, 128, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(1, 2, 2),            # diffusers' legacy name: heads per block (64 channels each)
        cross_attention_dim=CONTEXT_DIM, use_linear_projection=True, norm_num_groups=32)
    randomize_(unet, seed)
    return unet.eval()


def tiny_vae(seed: int = 1):
    """AutoencoderKL of SD's structure at the width of `VAEConfig.tiny()` (f8, 4 latent channels)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                        block_out_channels=(32, 32, 32, 64), norm_num_groups=32,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    randomize_(vae, seed)
    return vae.eval()


def ddim_scheduler(prediction: str):
    """SD 2.x's scheduler config (scaled-linear betas, steps_offset 1, alpha_bar_0 at the end)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type=PREDICTIONS[prediction],
                         timestep_spacing="leading")


def _block_names(unet) -> dict[str, str]:
    """diffusers module prefix -> the LDM (SD single-file) prefix, for this UNet's layout."""
    cfg = unet.config
    n, levels = cfg.layers_per_block, len(cfg.block_out_channels)
    names = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
             "mid_block.resnets.1": "middle_block.2"}
    for level in range(levels):
        for j in range(n):
            k = 1 + level * (n + 1) + j
            names[f"down_blocks.{level}.resnets.{j}"] = f"input_blocks.{k}.0"
            names[f"down_blocks.{level}.attentions.{j}"] = f"input_blocks.{k}.1"
        names[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{(level + 1) * (n + 1)}.0.op"
        attention = cfg.up_block_types[level].startswith("CrossAttn")
        for j in range(n + 1):
            names[f"up_blocks.{level}.resnets.{j}"] = f"output_blocks.{level * (n + 1) + j}.0"
            names[f"up_blocks.{level}.attentions.{j}"] = f"output_blocks.{level * (n + 1) + j}.1"
        names[f"up_blocks.{level}.upsamplers.0"] = f"output_blocks.{level * (n + 1) + n}.{2 if attention else 1}"
    return names


_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def ldm_name(key: str, names: dict[str, str]) -> str:
    """One diffusers UNet key (or module path) in LDM naming; transformer internals keep their names."""
    prefix = max((p for p in names if key == p or key.startswith(p + ".")), key=len)
    rest = key[len(prefix):]
    if ".resnets." in prefix + "." and rest:
        head, _, tail = rest[1:].partition(".")
        rest = "." + _RESNET.get(head, head) + ("." + tail if tail else "")
    return names[prefix] + rest


def write_sd_file(path: Path, unet, vae) -> Path:
    """An SD 2.x-layout .safetensors of the diffusers `unet` and `vae`."""
    from safetensors.torch import save_file

    from svdcli.models.vae_diffusers import vae_state_from_diffusers

    names = _block_names(unet)
    flat = {"model.diffusion_model." + ldm_name(k, names): v for k, v in unet.state_dict().items()}
    flat.update({"first_stage_model." + k: v
                 for k, v in vae_state_from_diffusers(vae.state_dict(), keep_quant_conv=True).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    return path


def transformer_blocks(unet) -> dict[str, torch.nn.Module]:
    """LDM path of every BasicTransformerBlock (`input_blocks.1.1.transformer_blocks.0`) -> the block."""
    from diffusers.models.attention import BasicTransformerBlock

    names = _block_names(unet)
    return {ldm_name(name, names): m for name, m in unet.named_modules() if isinstance(m, BasicTransformerBlock)}
