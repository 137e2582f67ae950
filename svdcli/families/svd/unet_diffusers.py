"""Key and config conversion between our (sgm-named) video UNet and diffusers'
`UNetSpatioTemporalConditionModel`. Both hold the same tensors with the same shapes; only
the names differ, so conversion is a table of block prefixes plus per-layer renames.

GroupNorm eps: diffusers builds some resnets with eps 1e-6 where sgm uses 1e-5. Real
diffusers-format SVD weights were trained in sgm, so our model keeps sgm's 1e-5 whatever the
source format (see `set_sgm_eps` for making a diffusers model agree with ours).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from svdcli.models.config import UNetConfig

_RESNET = {  # sgm ResBlock sub-modules -> diffusers ResnetBlock2D / TemporalResnetBlock
    "in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut",
}
_TOP = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
        "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
        "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}


def _block_table(cfg: UNetConfig) -> dict[str, tuple[str, str]]:
    """sgm layer prefix -> (diffusers prefix, kind) with kind in resnet/attn/plain."""
    table: dict[str, tuple[str, str]] = {}
    n, levels = cfg.num_res_blocks, len(cfg.channel_mult)
    for level in range(levels):
        for j in range(n):
            k = 1 + level * (n + 1) + j
            table[f"input_blocks.{k}.0"] = (f"down_blocks.{level}.resnets.{j}", "resnet")
            table[f"input_blocks.{k}.1"] = (f"down_blocks.{level}.attentions.{j}", "attn")
        if level < levels - 1:
            table[f"input_blocks.{(level + 1) * (n + 1)}.0.op"] = (
                f"down_blocks.{level}.downsamplers.0.conv", "plain")
    table["middle_block.0"] = ("mid_block.resnets.0", "resnet")
    table["middle_block.1"] = ("mid_block.attentions.0", "attn")
    table["middle_block.2"] = ("mid_block.resnets.1", "resnet")
    for u in range(levels):
        level = levels - 1 - u
        for j in range(n + 1):
            k = u * (n + 1) + j
            table[f"output_blocks.{k}.0"] = (f"up_blocks.{u}.resnets.{j}", "resnet")
            up_index = 1
            if cfg.level_has_attention(level):
                table[f"output_blocks.{k}.1"] = (f"up_blocks.{u}.attentions.{j}", "attn")
                up_index = 2
            if level and j == n:
                table[f"output_blocks.{k}.{up_index}.conv"] = (f"up_blocks.{u}.upsamplers.0.conv", "plain")
    return table


def _rename_resnet(tail: str) -> str:
    temporal = tail.startswith("time_stack.")
    if tail.startswith("time_mixer."):
        return tail
    body = tail[len("time_stack."):] if temporal else tail
    layer, _, param = body.rpartition(".")
    return f"{'temporal_res_block' if temporal else 'spatial_res_block'}.{_RESNET[layer]}.{param}"


def _rename_attn(tail: str) -> str:
    if tail.startswith("time_stack."):
        return "temporal_transformer_blocks." + tail[len("time_stack."):]
    if tail.startswith("time_pos_embed."):
        return tail.replace("time_pos_embed.0.", "time_pos_embed.linear_1.").replace(
            "time_pos_embed.2.", "time_pos_embed.linear_2.")
    return tail


def _key_maps(cfg: UNetConfig, keys) -> dict[str, str]:
    """sgm key -> diffusers key for every key in `keys` (sgm names); unknown keys raise KeyError."""
    table = _block_table(cfg)
    out = {}
    for key in keys:
        layer, _, param = key.rpartition(".")
        if layer in _TOP:
            out[key] = f"{_TOP[layer]}.{param}"
            continue
        parts = key.split(".")
        prefix = next((".".join(parts[:i]) for i in (4, 3, 2) if ".".join(parts[:i]) in table), None)
        if prefix is None:
            raise KeyError(key)
        target, kind = table[prefix]
        tail = key[len(prefix) + 1:]
        tail = {"resnet": _rename_resnet, "attn": _rename_attn, "plain": lambda s: s}[kind](tail)
        out[key] = f"{target}.{tail}"
    return out


def unet_state_to_diffusers(sd: dict, cfg: UNetConfig) -> dict:
    """Our state dict (sgm names, no prefix) -> diffusers `UNetSpatioTemporalConditionModel` names."""
    names = _key_maps(cfg, sd)
    return {names[k]: v for k, v in sd.items()}


def unet_state_from_diffusers(sd: dict, cfg: UNetConfig) -> tuple[dict, list[str]]:
    """diffusers names -> ours; returns (state, diffusers keys that have no counterpart)."""
    from svdcli.models.unet import VideoUNet
    import torch

    with torch.device("meta"):
        names = _key_maps(cfg, VideoUNet(cfg).state_dict())
    inverse = {v: k for k, v in names.items()}
    return ({inverse[k]: v for k, v in sd.items() if k in inverse},
            sorted(k for k in sd if k not in inverse))


def diffusers_unet_config(cfg: UNetConfig) -> dict[str, Any]:
    """The `unet/config.json` diffusers needs to build the same network."""
    if not (cfg.use_linear_in_transformer and cfg.extra_ff_mix_layer and cfg.use_spatial_context
            and cfg.merge_strategy == "learned_with_images" and cfg.adm_in_channels
            and not cfg.disable_temporal_crossattention and tuple(cfg.video_kernel_size) == (3, 1, 1)
            and cfg.adm_in_channels % 3 == 0):
        raise ValueError("diffusers' UNetSpatioTemporalConditionModel only represents SVD-shaped "
                         "UNets (linear projections, learned_with_images, 3 micro-conditioning ids)")
    levels = range(len(cfg.channel_mult))
    attn = [cfg.level_has_attention(lv) for lv in levels]
    return {
        "_class_name": "UNetSpatioTemporalConditionModel",
        "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
        "block_out_channels": cfg.level_channels(),
        "down_block_types": ["CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attn],
        "up_block_types": ["CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in reversed(attn)],
        "layers_per_block": cfg.num_res_blocks,
        "num_attention_heads": [ch // cfg.num_head_channels for ch in cfg.level_channels()],
        "cross_attention_dim": cfg.context_dim,
        "transformer_layers_per_block": cfg.transformer_depth,
        "projection_class_embeddings_input_dim": cfg.adm_in_channels,
        "addition_time_embed_dim": cfg.adm_in_channels // 3,
        "num_frames": 25, "sample_size": 96,
    }


def unet_config_from_diffusers(d: dict[str, Any]) -> UNetConfig:
    """UNetConfig from a diffusers `unet/config.json` (SVD layout)."""
    chans = list(d.get("block_out_channels", (320, 640, 1280, 1280)))
    heads = d.get("num_attention_heads", (5, 10, 20, 20))
    heads = [heads] * len(chans) if isinstance(heads, int) else list(heads)
    head_channels = {c // h for c, h in zip(chans, heads)}
    if len(head_channels) != 1:
        raise ValueError(f"per-level head widths differ ({sorted(head_channels)}); not representable")
    down = d.get("down_block_types", ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"])
    depth = d.get("transformer_layers_per_block", 1)
    if not isinstance(depth, int):
        raise ValueError("per-level transformer depths are not supported")
    return UNetConfig(
        in_channels=d.get("in_channels", 8), out_channels=d.get("out_channels", 4),
        model_channels=chans[0], channel_mult=tuple(c // chans[0] for c in chans),
        num_res_blocks=d.get("layers_per_block", 2),
        attention_resolutions=tuple(2**i for i, t in enumerate(down) if t.startswith("CrossAttn")),
        num_head_channels=head_channels.pop(), transformer_depth=depth,
        context_dim=d.get("cross_attention_dim", 1024),
        adm_in_channels=d.get("projection_class_embeddings_input_dim", 768))


def set_sgm_eps(model: nn.Module) -> None:
    """Give a diffusers UNetSpatioTemporalConditionModel sgm's resnet GroupNorm eps (1e-5)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.GroupNorm) and (".resnets." in name or name == "conv_norm_out"):
            module.eps = 1e-5
