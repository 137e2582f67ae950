"""diffusers folders of SVD: read into a `Checkpoint`, and written as a
`StableVideoDiffusionPipeline` folder.

Layout of the official diffusers SVD repositories: `unet/` and `vae/` (diffusers models),
`image_encoder/` (transformers CLIPVisionModelWithProjection), `feature_extractor/`
(CLIPImageProcessor), `scheduler/` (EulerDiscreteScheduler) and `model_index.json` naming them.
Without a conditioner only `unet/` and `vae/` are written: diffusers cannot load that as a
pipeline, but each model loads on its own.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from svdcli.errors import MissingWeightsError, SvdError
from svdcli.families.svd.checkpoint import Checkpoint, infer_vae_config, read_json_config
from svdcli.families.svd.conditioner_diffusers import IMAGE_TOWER
from svdcli.models.config import UNetConfig

# scheduler/scheduler_config.json of stabilityai/stable-video-diffusion-img2vid(-xt): Karras
# sigmas between sgm's sigma_min / sigma_max, v-prediction, continuous (c_noise) timesteps
SVD_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085,
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "trained_betas": None,
    "prediction_type": "v_prediction", "interpolation_type": "linear", "use_karras_sigmas": True,
    "sigma_min": 0.002, "sigma_max": 700.0, "timestep_spacing": "leading",
    "timestep_type": "continuous", "steps_offset": 1, "clip_sample": False,
    "set_alpha_to_one": False, "skip_prk_steps": True,
}
TOWER_KEYS = ("conv1.weight", "positional_embedding", "proj", "transformer.resblocks.0.mlp.c_fc.weight")
COMPONENTS = {  # model_index.json: component -> (library, class)
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
    "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
}


# --- reading ---------------------------------------------------------------------------------
def _diffusers_unet_config(path: Path) -> UNetConfig:
    from svdcli.families.svd.unet_diffusers import unet_config_from_diffusers

    try:
        return unet_config_from_diffusers(read_json_config(path))
    except (ValueError, TypeError, KeyError, ZeroDivisionError) as exc:  # values of the wrong kind
        raise SvdError(f"{path}: not a UNetSpatioTemporalConditionModel config we can build "
                       f"({type(exc).__name__}: {exc})") from None


def load_diffusers(path: Path, unet_config: UNetConfig | None) -> Checkpoint:
    from safetensors.torch import load_file

    from svdcli.families.svd.unet_diffusers import unet_state_from_diffusers

    ckpt = Checkpoint("diffusers", {}, None)
    if (path / "unet" / "config.json").exists():
        cfg = unet_config or _diffusers_unet_config(path / "unet" / "config.json")
        state, extra = unet_state_from_diffusers(load_file(str(_weights_file(path / "unet"))), cfg)
        ckpt.parts["unet"], ckpt.config = state, cfg
        ckpt.unexpected += [f"unet/{k}" for k in extra]
    vae_diffusers = None
    if (path / "vae" / "config.json").exists():
        from svdcli.models.vae import vae_state_from_diffusers

        vae_diffusers = load_file(str(_weights_file(path / "vae")))
        ckpt.parts["vae"] = vae_state_from_diffusers(vae_diffusers)
        ckpt.vae_config = infer_vae_config(ckpt.parts["vae"])
    encoder = _weights_file(path / "image_encoder", required=False)
    if encoder is not None and vae_diffusers is not None:
        from svdcli.families.svd.conditioner_diffusers import conditioner_state_from_diffusers

        ckpt.parts["conditioner"] = conditioner_state_from_diffusers(load_file(str(encoder)), vae_diffusers)
        ckpt.clip_vision = read_json_config(path / "image_encoder" / "config.json")
        ckpt.notes.append("conditioner from image_encoder/ + vae/ (CLIP text leftovers and the "
                          "conditioning VAE's decoder are not in diffusers folders)")
    return ckpt


def _weights_file(folder: Path, required: bool = True) -> Path | None:
    for stem in ("diffusion_pytorch_model", "model"):     # diffusers / transformers components
        for name in (f"{stem}.safetensors", f"{stem}.fp16.safetensors"):
            if (folder / name).exists():
                return folder / name
    if not required:
        return None
    raise MissingWeightsError(f"{folder} has a config.json but no diffusion_pytorch_model"
                              "[.fp16].safetensors; download the weights into that folder")


# --- writing ---------------------------------------------------------------------------------
def save_diffusers(folder: str | Path, ckpt: Checkpoint) -> tuple[list[str], list[str]]:
    """Write `ckpt` into `folder`; returns (parts written, notes)."""
    folder = Path(folder)
    written, notes = [], []
    if "unet" in ckpt.parts:
        _write_unet(folder, ckpt)
        written.append("unet")
    if "vae" in ckpt.parts:
        from svdcli.models.vae import vae_state_to_diffusers

        vae_cfg = ckpt.vae_config or infer_vae_config(ckpt.parts["vae"])
        _write_model(folder / "vae", diffusers_vae_config(vae_cfg), vae_state_to_diffusers(ckpt.parts["vae"]))
        written.append("vae")
    if "conditioner" in ckpt.parts:
        missing = [k for k in TOWER_KEYS if IMAGE_TOWER + k not in ckpt.parts["conditioner"]]
        if missing:
            notes.append(f"conditioner not written: its CLIP image tower is incomplete (no {missing[0]})")
        else:
            notes += _write_conditioner(folder, ckpt)
            written.append("conditioner")
    if {"unet", "vae", "conditioner"} <= set(written):
        _write_json(folder / "model_index.json", {"_class_name": "StableVideoDiffusionPipeline", **COMPONENTS})
    elif "conditioner" not in ckpt.parts:
        notes.append("the source has no conditioner: wrote unet/ and vae/ only (no image_encoder/, "
                     "scheduler/ or model_index.json), so StableVideoDiffusionPipeline cannot load the "
                     "folder; each model loads on its own")
    else:
        notes.append("no model_index.json: a pipeline needs unet, vae and a conditioner")
    return written, notes


def _write_unet(folder: Path, ckpt) -> None:
    from svdcli.families.svd.unet_diffusers import diffusers_unet_config, unet_state_to_diffusers

    try:
        config = diffusers_unet_config(ckpt.config)
    except ValueError as exc:
        raise SvdError(str(exc)) from None
    _write_model(folder / "unet", config, unet_state_to_diffusers(ckpt.parts["unet"], ckpt.config))


def _write_conditioner(folder: Path, ckpt) -> list[str]:
    """image_encoder/, feature_extractor/, scheduler/; notes on what diffusers has no room for."""
    from svdcli.families.svd.conditioner_diffusers import frame_encoder_mismatch, image_tower_to_transformers

    visual = {k[len(IMAGE_TOWER):]: v for k, v in ckpt.parts["conditioner"].items() if k.startswith(IMAGE_TOWER)}
    config = ckpt.clip_vision or clip_vision_config(visual, ckpt.clip_arch)
    try:
        state = image_tower_to_transformers(visual)
    except (ValueError, KeyError) as exc:
        raise SvdError(f"cannot write the CLIP image tower for transformers: {exc}") from None
    _write_model(folder / "image_encoder", config, state, weights="model.safetensors")
    _write_json(folder / "feature_extractor" / "preprocessor_config.json", clip_processor_config(config["image_size"]))
    _write_json(folder / "scheduler" / "scheduler_config.json", SVD_SCHEDULER)
    notes = []
    if "vae" in ckpt.parts:
        diff = frame_encoder_mismatch(ckpt.parts["conditioner"], ckpt.parts["vae"])
        if diff is not None:
            notes.append(f"the conditioner's own frame VAE differs from the model VAE ({diff}); diffusers "
                         "encodes the conditioning frame with vae/, so conditioning latents will differ")
    return notes


def clip_vision_config(visual: dict[str, torch.Tensor], clip_arch: str | None) -> dict[str, Any]:
    """transformers CLIPVisionConfig fields of an open_clip image tower: sizes from the weights,
    head count and activation from the open_clip model config (`clip_arch`, ViT-H-14 if None)."""
    import open_clip

    from svdcli.models.conditioner import CLIP_ARCH
    from svdcli.weights import register_model_config

    arch = clip_arch or CLIP_ARCH
    model_cfg = open_clip.get_model_config(register_model_config(arch))
    if model_cfg is None:
        raise SvdError(f"unknown open_clip model {arch!r} for the conditioner's image tower")
    vision = model_cfg["vision_cfg"]
    width, _, patch, _ = visual["conv1.weight"].shape          # (W, 3, P, P)
    grid = math.isqrt(visual["positional_embedding"].shape[0] - 1)  # class token + grid^2 patches
    return {
        "architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model",
        "hidden_size": width, "intermediate_size": visual["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": len({k.split(".")[2] for k in visual if k.startswith("transformer.resblocks.")}),
        "num_attention_heads": width // vision.get("head_width", 64),
        "patch_size": patch, "image_size": grid * patch, "num_channels": 3,
        "projection_dim": visual["proj"].shape[1],
        "hidden_act": "quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "dropout": 0.0,
        "initializer_factor": 1.0, "initializer_range": 0.02,
        "torch_dtype": str(visual["proj"].dtype).removeprefix("torch."),
    }


def clip_processor_config(size: int) -> dict[str, Any]:
    """feature_extractor/preprocessor_config.json: CLIP resize + crop to the tower's size, mean/std."""
    from svdcli.models.conditioner import CLIP_MEAN, CLIP_STD

    return {"crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor", "image_processor_type": "CLIPImageProcessor",
            "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "resample": 3,
            "rescale_factor": 1 / 255, "size": {"shortest_edge": size}}


def diffusers_vae_config(cfg) -> dict[str, Any]:
    """`vae/config.json` of diffusers' AutoencoderKLTemporalDecoder for our VAEConfig."""
    from svdcli.models.vae import SCALE_FACTOR

    levels = len(cfg.ch_mult)
    return {"_class_name": "AutoencoderKLTemporalDecoder", "in_channels": cfg.in_channels,
            "out_channels": cfg.out_ch, "down_block_types": ["DownEncoderBlock2D"] * levels,
            "block_out_channels": [cfg.ch * m for m in cfg.ch_mult],
            "layers_per_block": cfg.num_res_blocks, "latent_channels": cfg.z_channels,
            "sample_size": 768, "scaling_factor": SCALE_FACTOR, "force_upcast": True}


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _write_model(folder: Path, config: dict, state: dict[str, torch.Tensor],
                 weights: str = "diffusion_pytorch_model.safetensors") -> None:
    """config.json + weights (atomic); `format: pt` metadata, which transformers requires."""
    from safetensors.torch import save_file

    _write_json(folder / "config.json", config)
    tmp = folder / (weights + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / weights)
