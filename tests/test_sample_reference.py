"""End to end against the official sampler: tiny UNet + EDM denoiser + guider + Euler = sample_tiny."""
import pytest
import torch

from svdcli.diffusion.samplers import prior_sample, sample_euler
from svdcli.diffusion.schedules import karras_sigmas
from numeric import assert_ulp_distance


@pytest.fixture(scope="module")
def tiny_unet(fixtures_dir):
    from safetensors.torch import load_file

    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    prefix = "model.diffusion_model."
    state = {k[len(prefix):]: v.clone() for k, v in load_file(str(fixtures_dir / "unet_tiny.safetensors")).items()}
    unet = VideoUNet(UNetConfig.tiny()).eval()
    unet.load_state_dict(state, strict=True)
    return unet


@pytest.mark.parametrize("case", ["b1", "b2"])
def test_guided_euler_reproduces_official_samples(fixtures_dir, tiny_unet, case):
    from safetensors.torch import load_file

    from svdcli.families.svd.sampling import guided_video_denoiser

    t = {k[3:]: v.clone() for k, v in load_file(str(fixtures_dir / "sample_tiny_io.safetensors")).items()
         if k.startswith(case)}
    frames = 5
    sigmas = karras_sigmas(4)
    assert_ulp_distance(sigmas, t["sigmas"], 16)  # the ramp's ulp times rho = 7, as in test_edm
    cond = {k: t[f"cond_{k}"] for k in ("crossattn", "vector", "concat")}
    uncond = {k: t[f"uncond_{k}"] for k in ("crossattn", "vector", "concat")}
    denoiser = guided_video_denoiser(tiny_unet, frames, min_cfg=1.0, max_cfg=2.5)
    steps = []
    out = sample_euler(denoiser, prior_sample(t["noise"], sigmas), sigmas,
                       extra_args={"cond": cond, "uncond": uncond},
                       callback=lambda s: steps.append(s))
    for i, s in enumerate(steps):
        torch.testing.assert_close(s["denoised"], t[f"step{i}_denoised_guided"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(out, t["samples"], atol=1e-3, rtol=1e-5)
