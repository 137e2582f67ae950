"""Conditioner weights from a diffusers SVD folder (`image_encoder/` + `vae/`) and back.

diffusers keeps the CLIP image tower as a transformers `CLIPVisionModelWithProjection` and
encodes the conditioning frame with the pipeline's own VAE encoder (+ quant_conv). The official
conditioner also carries the CLIP text tower's leftovers and a full SD VAE (decoder included);
none of those is used to condition, and diffusers has no copy of them, so
`conditioner_state_from_diffusers` leaves them out and names them in `NOT_IN_DIFFUSERS`.
"""
from __future__ import annotations

import re

import torch

IMAGE_TOWER = "embedders.0.open_clip.model.visual."
FRAME_VAE = "embedders.3.encoder."
# conditioner keys with no diffusers counterpart; never used by Conditioner.forward
NOT_IN_DIFFUSERS = (
    "embedders.0.open_clip.model.positional_embedding", "embedders.0.open_clip.model.text_projection",
    "embedders.0.open_clip.model.logit_scale", "embedders.0.open_clip.model.token_embedding.",
    "embedders.0.open_clip.model.ln_final.", "embedders.3.encoder.decoder.",
    "embedders.3.encoder.post_quant_conv.",
)

_LAYER = {  # transformers encoder layer -> open_clip resblock (attention q/k/v handled apart)
    "self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
}
_TOP = {
    "vision_model.embeddings.class_embedding": "class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "positional_embedding",
    "vision_model.pre_layrnorm.weight": "ln_pre.weight", "vision_model.pre_layrnorm.bias": "ln_pre.bias",
    "vision_model.post_layernorm.weight": "ln_post.weight", "vision_model.post_layernorm.bias": "ln_post.bias",
}


def image_tower_from_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPVisionModelWithProjection state -> open_clip `visual.*` names (without the prefix)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key in _TOP:
            out[_TOP[key]] = value
        elif key == "visual_projection.weight":
            out["proj"] = value.t().contiguous()  # Linear (D, W) -> matrix (W, D): x @ proj
        elif m := re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", key):
            layer, module, kind = m.groups()
            if proj := re.fullmatch(r"self_attn\.([qkv])_proj", module):
                qkv.setdefault((layer, kind), {})[proj[1]] = value
            elif module in _LAYER:
                out[f"transformer.resblocks.{layer}.{_LAYER[module]}.{kind}"] = value
            else:
                raise ValueError(f"unexpected CLIP vision key {key}")
        elif not key.endswith("position_ids"):  # a buffer older transformers saved
            raise ValueError(f"unexpected CLIP vision key {key}")
    for (layer, kind), parts in qkv.items():
        # nn.MultiheadAttention packs q, k, v along the output dimension
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def image_tower_to_transformers(visual: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip `visual.*` state (without the prefix) -> CLIPVisionModelWithProjection names."""
    top = {v: k for k, v in _TOP.items()}
    layer_names = {v: k for k, v in _LAYER.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in visual.items():
        if key in top:
            out[top[key]] = value
        elif key == "proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)", key):
            layer, module, kind = m.groups()
            prefix = f"vision_model.encoder.layers.{layer}."
            out[f"{prefix}{layer_names[module]}.{kind}"] = value
        elif m := re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)", key):
            prefix = f"vision_model.encoder.layers.{m[1]}.self_attn."
            for name, part in zip("qkv", value.chunk(3)):
                out[f"{prefix}{name}_proj.{m[2]}"] = part
        else:
            raise ValueError(f"unexpected open_clip visual key {key}")
    return out


def conditioner_state_from_diffusers(image_encoder: dict[str, torch.Tensor],
                                     vae: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A diffusers SVD folder's image_encoder + vae states -> our Conditioner's (partial) state.

    Load it with `strict=False` and check that the missing keys all start with an entry of
    NOT_IN_DIFFUSERS (see `missing_is_harmless`).
    """
    from svdcli.models.vae import vae_state_from_diffusers

    out = {IMAGE_TOWER + k: v for k, v in image_tower_from_transformers(image_encoder).items()}
    frame_vae = vae_state_from_diffusers(vae, keep_quant_conv=True)
    for key, value in frame_vae.items():
        if key.startswith("encoder.") or key.startswith("quant_conv."):
            out[FRAME_VAE + key] = value
    return out


def missing_is_harmless(missing_keys) -> bool:
    """True when every missing conditioner key is one diffusers does not have (unused ones)."""
    return all(k.startswith(NOT_IN_DIFFUSERS) for k in missing_keys)


def frame_encoder_mismatch(conditioner: dict[str, torch.Tensor], vae: dict[str, torch.Tensor]) -> str | None:
    """How the conditioner's frame encoder differs from the model VAE's encoder (our naming), with
    quant_conv folded into conv_out on both sides; None when they compute the same latent.

    diffusers encodes the conditioning frame with the pipeline's VAE, so a conditioner whose own
    SD VAE differs cannot be carried over exactly.
    """
    own = {k[len(FRAME_VAE):]: v for k, v in conditioner.items()
           if k.startswith(FRAME_VAE) and not k.startswith(NOT_IN_DIFFUSERS)}
    if not own:  # no frame encoder of its own: nothing to lose
        return None
    own, model = _folded_encoder(own), _folded_encoder(vae)
    if set(own) != set(model):
        return f"{len(set(own) ^ set(model))} tensors present in only one of them"
    if any(own[k].shape != model[k].shape for k in own):
        return "tensor shapes differ"
    worst = max((own[k].double() - model[k].double()).abs().max().item() for k in own)
    # folding quant_conv in float32 rounds at ~1e-7: below 1e-6 the latents are the same
    return f"max |difference| {worst:.3g}" if worst > 1e-6 else None


def _folded_encoder(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An SD VAE's `encoder.*` with its quant_conv (if any) folded into encoder.conv_out."""
    from svdcli.models.vae import vae_state_from_diffusers, vae_state_to_diffusers

    part = {k: v for k, v in state.items() if k.startswith(("encoder.", "quant_conv."))}
    return vae_state_from_diffusers(vae_state_to_diffusers(part))
