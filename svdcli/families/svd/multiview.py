"""SVD-MV (SVD paper sec. 4.5, app. D.6): the image-to-video model finetuned on object orbits,
its frames the views of one orbit, conditioned on the camera elevation of the input view.

App. D.6: "we feed the elevation of the camera as conditioning to the model. We first pass the
elevation through a timestep embedding layer that embeds the sine and cosine of the elevation
angle at various frequencies and concatenates them into a vector. This vector is finally
concatenated to the overall vector condition of the UNet." So the `vector` grows from
(fps_id, motion_bucket_id, cond_aug) to (fps_id, motion_bucket_id, cond_aug, elevation), each
embedded with the same sinusoidal embedding (sgm's ConcatTimestepEmbedderND), and the UNet's
first label_emb layer takes a quarter more inputs.

Not in the paper, so chosen here: the elevation is embedded in degrees (as the other scalars,
raw numbers; radians in [-0.09, 0.52] would leave the embedding's fastest frequency barely
turning), and a finetune from an image-to-video checkpoint starts the new label_emb columns at
zero, so step 0 is exactly the image-to-video model whatever the elevation.
"""
from __future__ import annotations

import dataclasses

import torch

from svdcli.errors import SvdError

STAGE = "multiview"
SCALARS = 4                               # fps_id, motion_bucket_id, cond_aug, elevation
VECTOR_INPUT = "label_emb.0.0.weight"     # the UNet's first layer on the vector (out, adm_in_channels)


def unet_config(base):
    """The UNet of a multi-view stage: `base` (a UNetConfig) with room for the elevation embedding."""
    if not base.adm_in_channels or base.adm_in_channels % 3:
        raise SvdError("multi-view training needs a UNet with SVD's three-scalar vector conditioning")
    return dataclasses.replace(base, adm_in_channels=base.adm_in_channels // 3 * SCALARS,
                               extra={**base.extra, STAGE: True})


def is_multiview(unet_cfg) -> bool:
    """Whether a UNet (config) is a multi-view one (its config, saved in every export, says so)."""
    return bool(unet_cfg.extra.get(STAGE))


def elevation_embedding(elevation_deg, dim: int, batch: int | None = None) -> torch.Tensor:
    """(B, dim): sinusoidal embedding of the camera elevation in degrees (app. D.6)."""
    from svdcli.models.conditioner import timestep_embedding

    value = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
    if torch.isnan(value).any():
        raise SvdError("a multi-view sample has no camera elevation: train on orbits rendered with "
                       "`svd render orbits` and packed with `svd pack` (their json carries the poses)")
    return timestep_embedding(value.expand(batch or len(value)), dim)


def append_elevation(vector: torch.Tensor, elevation_deg, dim: int) -> torch.Tensor:
    """The three-scalar `vector` (B, 3*dim) with the elevation embedding after it: (B, 4*dim)."""
    emb = elevation_embedding(elevation_deg, dim, vector.shape[0]).to(vector.device, vector.dtype)
    return torch.cat([vector, emb], dim=1)


def widen_vector_input(state: dict[str, torch.Tensor], adm_in_channels: int) -> bool:
    """An image-to-video UNet state -> one that takes the elevation: zero columns appended to the
    vector's first layer, so the finetune starts as the image-to-video model. False when the
    state already has the width (a multi-view checkpoint)."""
    weight = state.get(VECTOR_INPUT)
    if weight is None or weight.shape[1] == adm_in_channels:
        return False
    if weight.shape[1] * SCALARS != adm_in_channels * 3:
        raise SvdError(f"the checkpoint's vector conditioning has {weight.shape[1]} inputs; a multi-view UNet "
                       f"widens three scalar embeddings to four ({adm_in_channels} inputs)")
    extra = torch.zeros(weight.shape[0], adm_in_channels - weight.shape[1], dtype=weight.dtype)
    state[VECTOR_INPUT] = torch.cat([weight, extra], dim=1)
    return True
