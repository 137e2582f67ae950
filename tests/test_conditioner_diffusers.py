"""A diffusers SVD folder's CLIP image encoder and VAE convert into our conditioner."""
from __future__ import annotations

import pytest
import torch
from test_conditioner import tiny_clip  # noqa: F401  (fixture: the tiny open_clip config as a .json path)

from svdcli.models.conditioner import Conditioner, ConditionerConfig, ImageEmbedder
from svdcli.families.svd.conditioner_diffusers import (
    conditioner_state_from_diffusers,
    image_tower_from_transformers,
    image_tower_to_transformers,
    missing_is_harmless,
)
from svdcli.models.vae import VAEConfig


@pytest.fixture(scope="module")
def hf_vision():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=24, hidden_act="gelu")  # ViT-H: gelu
    return CLIPVisionModelWithProjection(cfg).eval()


@torch.no_grad()
def test_transformers_image_encoder_gives_the_same_embedding(tiny_clip, hf_vision):
    embedder = ImageEmbedder(tiny_clip, pretrained=None).eval()
    embedder.open_clip.model.visual.load_state_dict(image_tower_from_transformers(hf_vision.state_dict()))
    image = torch.rand(2, 3, 40, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    pixels = embedder.preprocess(image)
    torch.testing.assert_close(embedder(image)[:, 0], hf_vision(pixel_values=pixels).image_embeds,
                               atol=1e-5, rtol=0)


def test_image_tower_names_round_trip(hf_vision):
    sd = hf_vision.state_dict()
    back = image_tower_to_transformers(image_tower_from_transformers(sd))
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_diffusers_folder_fills_every_key_the_conditioner_uses(tiny_clip, hf_vision):
    from diffusers import AutoencoderKLTemporalDecoder

    vae = AutoencoderKLTemporalDecoder(block_out_channels=(32, 32, 32, 64),
                                       down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2)
    model = Conditioner(ConditionerConfig(clip_arch=tiny_clip, vae=VAEConfig.tiny(), vector_dim=8)).eval()
    state = conditioner_state_from_diffusers(hf_vision.state_dict(), vae.state_dict())
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and missing_is_harmless(result.missing_keys)
    # the conditioning latent is diffusers' own VAE posterior mode (its `_encode_vae_image`)
    frame = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.frame_encoder(frame), vae.encode(frame).latent_dist.mode(),
                                   atol=1e-5, rtol=0)
