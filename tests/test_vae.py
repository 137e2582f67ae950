"""The autoencoder reproduces the official sgm VAE (reference fixtures) and diffusers' SVD VAE."""
from __future__ import annotations

import json
import re

import pytest
import torch

from svdcli.models.vae import (
    SCALE_FACTOR,
    ImageAutoencoder,
    VAEConfig,
    VideoAutoencoder,
    vae_state_from_diffusers,
    vae_state_to_diffusers,
)
from random_weights import randomize_
from numeric import assert_close_ulps

ATOL = 2e-5  # fixture README: legitimate differences <= 1.0e-5, eps bugs >= 4.3e-5


def _load(path):
    from safetensors.torch import load_file

    # clone: tensors straight from the unaligned safetensors buffer take other SIMD paths
    return {k: v.clone() for k, v in load_file(str(path)).items()}


@pytest.fixture(scope="module")
def fixture_vae(fixtures_dir):
    sd = _load(fixtures_dir / "vae_tiny.safetensors")
    vae = VideoAutoencoder(VAEConfig.tiny()).eval()
    vae.load_state_dict({k.removeprefix("first_stage_model."): v for k, v in sd.items()}, strict=True)
    return vae, _load(fixtures_dir / "vae_tiny_io.safetensors")


@torch.no_grad()
def test_encoder_matches_official_moments_and_mode(fixture_vae):
    vae, io = fixture_vae
    torch.testing.assert_close(vae.encode_moments(io["video"]), io["encoder_moments"], atol=ATOL, rtol=0)
    torch.testing.assert_close(vae.encode(io["video"]), io["posterior_mode"], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "latent, expected, chunk",
    [
        ("decoder_latent", "decoded_t5", None),
        ("decoder_latent", "decoded_chunk2", 2),
        ("decoder_latent_2videos", "decoded_2videos_t5", None),
        ("decoder_latent_small", "decoded_small_t5", None),  # GroupNorm eps stress case
    ],
)
@torch.no_grad()
def test_temporal_decoder_matches_official(fixture_vae, latent, expected, chunk):
    vae, io = fixture_vae
    out = vae.decode(io[latent], num_frames=5, chunk=chunk)
    torch.testing.assert_close(out, io[expected], atol=ATOL, rtol=0)


@torch.no_grad()
def test_chunks_never_span_two_videos(fixture_vae):
    vae, io = fixture_vae
    z = io["decoder_latent_2videos"][:, :, :2, :3]  # 2 videos x 5 frames, cropped for speed
    both = vae.decode(z, num_frames=5, chunk=2)
    one_by_one = torch.cat([vae.decode(z[:5], 5, chunk=2), vae.decode(z[5:], 5, chunk=2)])
    torch.testing.assert_close(both, one_by_one, atol=1e-6, rtol=0)
    # a chunk as long as the video is the unchunked decode
    assert_close_ulps(vae.decode(z, 5, chunk=5), vae.decode(z, 5))


@torch.no_grad()
def test_diffusion_latents_are_scaled_vae_latents(fixture_vae):
    vae, io = fixture_vae
    z = io["decoder_latent"]
    torch.testing.assert_close(vae.decode_diffusion_latents(z * SCALE_FACTOR, 5), vae.decode(z, 5),
                               atol=1e-5, rtol=0)


def test_decode_rejects_partial_videos():
    vae = VideoAutoencoder(VAEConfig.tiny())
    with pytest.raises(ValueError, match="5-frame videos"):
        vae.decode(torch.zeros(7, 4, 2, 2), num_frames=5)


def _official_shapes(reference_dir, prefix: str, tsv: str = "svd_checkpoint_keys.tsv") -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (reference_dir / tsv).read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            shapes[key.removeprefix(prefix)] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return shapes


def test_full_size_vae_has_exactly_the_official_keys(reference_dir):
    with torch.device("meta"):
        vae = VideoAutoencoder(VAEConfig.svd())
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert ours == _official_shapes(reference_dir, "first_stage_model.")


def test_image_decoder_variant_loads_into_the_plain_autoencoder(reference_dir):
    with torch.device("meta"):
        vae = ImageAutoencoder(VAEConfig.svd())
    ours = {k: tuple(v.shape) for k, v in vae.state_dict().items()}
    assert ours == _official_shapes(reference_dir, "first_stage_model.", "svd_image_decoder_checkpoint_keys.tsv")


def test_config_round_trips_through_a_dict():
    cfg = VAEConfig.tiny()
    assert VAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown VAE config keys"):
        VAEConfig.from_dict({"channels": 3})


def _tiny_diffusers_vae():
    from diffusers import AutoencoderKLTemporalDecoder

    model = AutoencoderKLTemporalDecoder(
        block_out_channels=(32, 32, 32, 64), down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2
    ).eval()
    randomize_(model, 7)
    return model


@torch.no_grad()
def test_diffusers_temporal_vae_converts_to_the_same_network():
    ref = _tiny_diffusers_vae()
    ours = VideoAutoencoder(VAEConfig.tiny()).eval()
    ours.load_state_dict(vae_state_from_diffusers(ref.state_dict()), strict=True)  # quant_conv folded
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(4, 3, 24, 40, generator=g) * 2 - 1
    torch.testing.assert_close(ours.encode(frames), ref.encode(frames).latent_dist.mode(), atol=2e-5, rtol=0)
    z = torch.randn(6, 4, 3, 5, generator=g)
    for scale in (1.0, 0.01):  # 0.01: outputs hinge on the GroupNorm eps
        expected = ref.decode(z * scale, num_frames=3).sample
        torch.testing.assert_close(ours.decode(z * scale, num_frames=3), expected, atol=2e-5, rtol=0)


def test_groupnorm_eps_agree_with_diffusers():
    ours = VideoAutoencoder(VAEConfig.tiny())
    ours_modules = dict(ours.named_modules())
    # to_diffusers keeps key order, so zipping pairs each of our keys with its diffusers name
    to_ours = dict(zip(vae_state_to_diffusers(ours.state_dict()), ours.state_dict()))
    norms = [(n, m.eps) for n, m in _tiny_diffusers_vae().named_modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) > 50
    for name, eps in norms:
        assert ours_modules[to_ours[name + ".weight"].removesuffix(".weight")].eps == eps, name


def test_state_dict_round_trips_through_diffusers_names():
    sd = VideoAutoencoder(VAEConfig.tiny()).state_dict()
    there = vae_state_to_diffusers(sd)
    assert set(there) == set(_tiny_diffusers_vae().state_dict())
    back = vae_state_from_diffusers(there)  # identity quant_conv folds away exactly
    assert set(back) == set(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)  # x * 1 + 0 + ... is exact in IEEE arithmetic


@torch.no_grad()
def test_image_autoencoder_matches_diffusers_autoencoder_kl():
    from diffusers import AutoencoderKL

    ref = AutoencoderKL(block_out_channels=(32, 32, 32, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2).eval()
    randomize_(ref, 11)
    ours = ImageAutoencoder(VAEConfig.tiny()).eval()
    ours.load_state_dict(vae_state_from_diffusers(ref.state_dict(), keep_quant_conv=True), strict=True)
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(2, 3, 16, 24, generator=g) * 2 - 1
    torch.testing.assert_close(ours.encode(frames), ref.encode(frames).latent_dist.mode(), atol=2e-5, rtol=0)
    z = torch.randn(2, 4, 2, 3, generator=g)
    torch.testing.assert_close(ours.decode(z), ref.decode(z).sample, atol=2e-5, rtol=0)


@torch.no_grad()
def test_half_precision_decode_runs_and_stays_close(fixture_vae):
    vae, io = fixture_vae
    half = VideoAutoencoder(VAEConfig.tiny()).eval()
    half.load_state_dict(vae.state_dict())
    half.to(torch.bfloat16)  # temporal GroupNorms still compute in float32
    out = half.decode(io["decoder_latent"].bfloat16(), num_frames=5)
    assert out.dtype == torch.bfloat16
    assert (out.float() - io["decoded_t5"]).abs().max() < 0.15  # bf16 keeps ~3 significant digits
