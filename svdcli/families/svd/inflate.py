"""SD 2.1 image UNet -> SVD video UNet (inflation, as Video LDM and SVD start their video models),
and which UNet tensors are the temporal layers added to the image model."""
from __future__ import annotations

import torch

from svdcli.errors import SvdError
from svdcli.models.config import UNetConfig

TEMPORAL_PARTS = ("time_stack", "time_mixer", "time_pos_embed")  # sgm names of the temporal layers


def is_temporal(name: str) -> bool:
    """Temporal layers are the ones added to the image UNet (`time_embed` is the sigma embedding)."""
    return any(part in TEMPORAL_PARTS for part in name.split("."))


def is_video_only(name: str) -> bool:
    """Tensors an SD 2.1 image UNet lacks: the temporal layers and the micro-conditioning embedding."""
    return (".time_stack." in f".{name}" or "time_mixer" in name or "time_pos_embed" in name
            or name.startswith("label_emb."))


_BRANCH_ENDS = ("time_stack.out_layers.3.", "ff_in.net.2.", "attn1.to_out.0.", "attn2.to_out.0.",
                "ff.net.2.")


def _temporal_output_layers(name: str) -> bool:
    """The last layer of each temporal branch: zeroed, the branch is the identity at start."""
    if "time_pos_embed.2." in name:           # frame-position embedding starts at 0
        return True
    return ".time_stack." in f".{name}" and any(end in name for end in _BRANCH_ENDS)


def inflate_image_unet(image_state: dict[str, torch.Tensor], cfg: UNetConfig,
                       seed: int = 0) -> dict[str, torch.Tensor]:
    """SD 2.1 UNet weights -> a video UNet state whose output equals the image model per frame.

    Spatial layers take the image weights (extra input channels zero, so the conditioning
    latent starts ignored); every temporal branch ends in a zeroed layer, so it starts as the
    identity and alpha-blending an identity with the spatial path changes nothing; label_emb
    (absent in SD 2.1) ends zeroed, so the micro-conditioning starts silent. Gradients still
    reach all of them through the zeroed layers' inputs.
    """
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(seed)
    fresh = VideoUNet(cfg).state_dict()
    state = {}
    for name, value in fresh.items():
        if name in image_state and ".time_stack." not in f".{name}" and "time_mixer" not in name:
            src = image_state[name]
            if name == "input_blocks.0.0.weight" and src.shape[1] < value.shape[1]:
                padded = torch.zeros_like(value)
                padded[:, : src.shape[1]] = src          # (C, 4, 3, 3) -> (C, 8, 3, 3)
                src = padded
            if src.shape != value.shape:
                raise SvdError(f"image checkpoint tensor {name} has shape {tuple(src.shape)}, "
                               f"the video UNet needs {tuple(value.shape)}")
            state[name] = src.to(value.dtype)
        elif _temporal_output_layers(name) or name.startswith("label_emb.0.2."):
            state[name] = torch.zeros_like(value)
        else:
            state[name] = value
    missing = [k for k in fresh if not is_video_only(k) and k not in image_state]
    if missing:
        raise SvdError(f"image checkpoint lacks {len(missing)} spatial UNet tensors (e.g. {missing[0]})")
    return state
