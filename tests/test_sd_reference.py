"""The shared SD reference helper (tests/sd_reference.py) writes files that svdcli's SD reader
takes for what diffusers computes: the same UNet output and the same VAE latents."""
from __future__ import annotations

import torch

import sd_reference as ref
from numeric import assert_close_ulps

# Two implementations of one network sum in different orders (attention, norms, convs): their
# outputs differ by float32 rounding that grows with depth. The tiny UNet is ~60 layers deep:
# 256 ulps of the output's magnitude, as tests/test_video_ldm_reference.py allows (64 was seen
# to fail by 1% under ATen's avx2 kernels); the VAE is shallower: 64.
UNET_ULPS, VAE_ULPS = 256, 64


def test_sd_file_reads_back_as_the_diffusers_models(tmp_path):
    from svdcli.families.svd.formats import load_checkpoint
    from svdcli.families.svd.inflate import inflate_image_unet
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.models.vae import ImageAutoencoder

    unet, vae = ref.tiny_unet(0), ref.tiny_vae(1)
    ckpt = load_checkpoint(ref.write_sd_file(tmp_path / "sd.safetensors", unet, vae))
    assert ckpt.kind == "sd21"
    cfg = UNetConfig.tiny(in_channels=4, adm_in_channels=None)
    ours = VideoUNet(cfg)
    ours.load_state_dict(inflate_image_unet(ckpt.parts["unet"], cfg))
    ours_vae = ImageAutoencoder(ckpt.vae_config)
    ours_vae.load_state_dict(ckpt.parts["vae"], strict=True)
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 5, 40, generator=g)
    t = torch.tensor([0.0, 500.0, 999.0])
    img = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        expected = unet(x, t, ctx).sample
        got = ours.eval()(x, t, ctx, None, 1)
        z_ref = vae.encode(img).latent_dist.mode()
        z = ours_vae.eval().encode(img)
    assert_close_ulps(got, expected, ulps=UNET_ULPS, msg="UNet read from the SD file vs diffusers':")
    assert_close_ulps(z, z_ref, ulps=VAE_ULPS, msg="VAE read from the SD file vs diffusers':")
