"""EDM math and the denoiser wrapper against the official implementation's recorded values."""
from __future__ import annotations

import json

import pytest
import torch

from svdcli.diffusion import edm
from svdcli.diffusion.schedules import karras_sigmas
from svdcli.models.config import UNetConfig
from svdcli.models.unet import VideoUNet
from numeric import assert_close_ulps, assert_ulp_distance


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return json.loads((fixtures_dir / "edm_reference.json").read_text())


@pytest.mark.parametrize("n", [4, 25, 30])
def test_karras_sigmas_match_official_float32(ref, n):
    entry = ref["EDMDiscretization"][f"n{n}"]
    sigmas = karras_sigmas(n)
    assert sigmas.dtype == torch.float32 and len(sigmas) == n + 1 and sigmas[-1] == 0
    # the ramp's last ulp (a kernel with or without FMA) becomes rho = 7 ulps after the power,
    # and pow is not correctly rounded: measured 11 ulps with ATen's default (non-SIMD) kernels
    assert_ulp_distance(sigmas, torch.tensor(entry["float32"]), 16)
    init = (1 + sigmas[0] ** 2) ** 0.5
    assert_ulp_distance(init, torch.tensor(entry["init_noise_scale_sqrt_1_plus_sigma0_sq_float32"]), 2)


def test_karras_sigmas_rejects_zero_steps():
    with pytest.raises(ValueError, match="at least one"):
        karras_sigmas(0)


def test_scalings_match_official(ref):
    r = ref["VScalingWithEDMcNoise"]
    s32 = torch.tensor(r["sigmas"], dtype=torch.float32)
    s64 = torch.tensor(r["sigmas"], dtype=torch.float64)
    names = ["c_skip", "c_out", "c_in", "c_noise"]
    for name, v32, v64 in zip(names, edm.scalings(s32), edm.scalings(s64)):
        want = torch.tensor(r["float32"][name])
        # c_noise = log(sigma) / 4: float32 log is not correctly rounded, and torch's vectorised
        # CPU paths (AVX2 / AVX-512) differ by one ulp (log 7 here); the other factors chain two
        # or three correctly rounded ops that a kernel may fuse (FMA): each within an ulp or two
        assert_ulp_distance(v32, want, 1 if name == "c_noise" else 2, msg=name)
        assert torch.allclose(v64, torch.tensor(r["float64"][name], dtype=torch.float64),
                              rtol=1e-12, atol=0), name


def test_loss_weight_matches_official(ref):
    r = ref["VWeighting"]
    s32 = torch.tensor(r["sigmas"], dtype=torch.float32)
    assert torch.allclose(edm.loss_weight(s32), torch.tensor(r["float32"]), rtol=1e-6)
    s64 = torch.tensor(r["sigmas"], dtype=torch.float64)
    assert torch.allclose(edm.loss_weight(s64), torch.tensor(r["float64"], dtype=torch.float64), rtol=1e-12)


def test_lognormal_sigmas_have_requested_moments_and_seed():
    g = torch.Generator().manual_seed(0)
    sigma = edm.sample_sigmas_lognormal(200_000, P_mean=0.7, P_std=1.6, generator=g)
    assert abs(sigma.log().mean().item() - 0.7) < 0.02
    assert abs(sigma.log().std().item() - 1.6) < 0.02
    again = edm.sample_sigmas_lognormal(200_000, 0.7, 1.6, torch.Generator().manual_seed(0))
    assert torch.equal(sigma, again)  # the same draws from the same seed


def test_denoiser_reproduces_official_guided_step(fixtures_dir):
    """First Euler step of the official sampler: D for uncond and cond halves, linear guidance."""
    from safetensors.torch import load_file

    from test_unet import load_fixture_unet

    den = edm.Denoiser(load_fixture_unet(fixtures_dir))
    io = {k: v.clone() for k, v in load_file(fixtures_dir / "sample_tiny_io.safetensors").items()}
    t = 5
    x, sigma = io["b2_x_init_scaled"], io["b2_sigmas"][0]
    cond = {k: torch.cat([io[f"b2_uncond_{k}"], io[f"b2_cond_{k}"]]) for k in ("crossattn", "vector", "concat")}
    with torch.no_grad():
        d_u, d_c = den(torch.cat([x, x]), sigma, cond, t, torch.zeros(4, t)).chunk(2)
    scale = torch.linspace(1.0, 2.5, t).repeat(2)[:, None, None, None]     # per frame, 2 videos
    guided = d_u + scale * (d_c - d_u)
    expected = io["b2_step0_denoised_guided"]
    assert torch.allclose(guided, expected, atol=1e-3, rtol=1e-5)
    # the concat latent enters unscaled: scaling it by c_in would change D visibly
    cond_scaled = dict(cond, concat=cond["concat"] * edm.c_in(sigma))
    with torch.no_grad():
        d_wrong = den(torch.cat([x, x]), sigma, cond_scaled, t, torch.zeros(4, t)).chunk(2)[1]
    assert not torch.allclose(d_wrong, d_c, atol=1e-2)


def _tiny_denoiser() -> edm.Denoiser:
    torch.manual_seed(0)
    return edm.Denoiser(VideoUNet(UNetConfig.tiny(channel_mult=(1, 2), attention_resolutions=(1,))))


def test_edm_loss_is_weighted_denoising_error_per_video():
    den = _tiny_denoiser()
    x0, cond = torch.randn(4, 4, 8, 8), {"crossattn": torch.randn(4, 1, 40), "vector": torch.randn(4, 24),
                                         "concat": torch.randn(4, 4, 8, 8)}
    sigma, noise = torch.tensor([0.5, 3.0]), torch.randn(4, 4, 8, 8)
    loss = edm.edm_loss(den, x0, cond, 2, sigma=sigma, noise=noise)
    s = sigma.repeat_interleave(2)[:, None, None, None]
    with torch.no_grad():
        d = den(x0 + s * noise, s.flatten(), cond, 2)
    manual = ((s**2 + 1) / s**2 * (d - x0) ** 2).reshape(2, -1).mean(1)
    assert loss.shape == (2,)
    assert torch.allclose(loss, manual, rtol=1e-5)
    loss.mean().backward()
    assert den.net.out[-1].weight.grad.abs().sum() > 0


def test_untrained_denoiser_starts_from_the_v_prediction_baseline():
    """With F = 0 (zero-initialised output conv) D = c_skip x: the loss then equals E[(c_skip x - x0)^2 w]."""
    den = _tiny_denoiser()
    x0 = torch.randn(2, 4, 8, 8)
    cond = {"crossattn": torch.randn(2, 1, 40), "vector": torch.randn(2, 24), "concat": torch.zeros(2, 4, 8, 8)}
    noise = torch.randn_like(x0)
    loss = edm.edm_loss(den, x0, cond, 2, sigma=torch.tensor([2.0]), noise=noise)
    expected = (1.25 * (0.2 * (x0 + 2 * noise) - x0) ** 2).mean()
    assert torch.allclose(loss, expected.reshape(1), rtol=1e-5)


def test_denoiser_rejects_per_video_sigma_for_a_video_batch():
    den = _tiny_denoiser()
    cond = {"crossattn": torch.zeros(4, 1, 40), "vector": torch.zeros(4, 24), "concat": torch.zeros(4, 4, 8, 8)}
    with pytest.raises(ValueError, match="one value per frame"):
        den(torch.zeros(4, 4, 8, 8), torch.tensor([1.0, 2.0]), cond, 2)


def test_the_denoiser_owns_its_loss_and_a_training_engine_reaches_it_through_forward():
    """`Denoiser.loss` is the network's own objective: for SVD's scaling EDM eq. 8 (the weighted
    denoising error above); `forward(x0, sigma, ..., loss_noise=n)` returns the same, so a
    DeepSpeed engine, which runs only forward, trains the same loss."""
    den = _tiny_denoiser()
    from random_weights import randomize_

    randomize_(den, 0)
    x0, cond = torch.randn(4, 4, 8, 8), {"crossattn": torch.randn(4, 1, 40), "vector": torch.randn(4, 24),
                                         "concat": torch.randn(4, 4, 8, 8)}
    sigma, noise = torch.tensor([0.5, 3.0]), torch.randn(4, 4, 8, 8)
    with torch.no_grad():
        own = den.loss(x0, noise, sigma, cond, 2)
        assert_close_ulps(own, edm.edm_loss(den, x0, cond, 2, sigma=sigma, noise=noise))
        assert_close_ulps(den(x0, sigma, cond, 2, loss_noise=noise), own)
    with pytest.raises(ValueError, match="objective must be"):
        edm.Denoiser(den.net, objective="x0")


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_the_network_objective_is_the_eps_or_v_mse_and_exact_at_small_sigma(prediction):
    """objective "network": ||F - eps||^2 or ||F - v||^2 with v = alpha eps - s x0 (Salimans & Ho
    2022); it equals lambda ||D - x0||^2 (lambda = 1 / c_out^2) where D - x0 keeps its digits, and
    stays exact at sigma = 1e-5, where D - x0 has cancelled them away in float32."""
    from svdcli.diffusion.scalings import EpsScaling, VScaling
    from svdcli.diffusion.schedules import CosineSchedule

    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 3, generator=g) * 0.3
    net = lambda z, c, **_: torch.einsum("oi,nihw->nohw", w, z) * (1 + c.reshape(-1, 1, 1, 1))  # noqa: E731
    scaling = (EpsScaling if prediction == "eps" else VScaling)(CosineSchedule())
    den = edm.KeywordDenoiser(net, scaling, objective="network")
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    for sigma in (torch.tensor([0.7, 2.0]), torch.tensor([1e-5, 1e-5])):
        s = sigma.repeat_interleave(2).reshape(-1, 1, 1, 1)
        x = x0 + noise * s
        f = net(x / (1 + s**2).sqrt(), scaling.c_noise(s).reshape(-1))
        target = noise if prediction == "eps" else (noise - s * x0) / (1 + s**2).sqrt()
        expected = ((f - target) ** 2).reshape(2, -1).mean(1)
        got = den.loss(x0, noise, sigma, {}, 2)
        assert_close_ulps(got, expected, scale=float(expected.max()), ulps=64)
        weighted = edm.edm_loss(den, x0, {}, 2, sigma=sigma, noise=noise, weight=scaling.loss_weight)
        if sigma[0] > 0.1:
            assert_close_ulps(weighted, expected, scale=float(expected.max()), ulps=256)
        else:
            assert (weighted - expected).abs().max() > 1e-4 * expected.max()   # the denoised form lost ~3 digits
