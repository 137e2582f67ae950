"""Ancestral sampler: VDM's posterior step exactly, DDPM (diffusers) step for step, marginals, seeds;
the one ancestral step (`get_ancestral_step`) accurate in float32 however far a step falls."""
from __future__ import annotations

import pytest
import torch

from svdcli.diffusion.samplers import get_ancestral_step, prior_sample, sample_ancestral, step_ancestral, step_noise
from svdcli.diffusion.edm import precondition
from svdcli.diffusion.scalings import EpsScaling, VScaling, to_vp
from svdcli.diffusion.schedules import CosineSchedule, DiscreteVPSchedule
from numeric import assert_close_ulps


def _constant(value):
    """A denoiser that always answers x0_hat = value: the exact denoiser of a point mass."""
    return lambda x, sigma: torch.full_like(x, value)


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0])
def test_one_step_is_the_vdm_posterior_in_log_snr_form(gamma):
    """z_s = mu~_{s|t}(z_t, x) + sqrt((sigma~^2_{s|t})^(1-gamma) (sigma^2_{t|s})^gamma) eps (Ho et al. 2022)."""
    sched = CosineSchedule()
    t, s = torch.tensor(0.6, dtype=torch.float64), torch.tensor(0.55, dtype=torch.float64)
    sig_t, sig_s = sched.sigma(t), sched.sigma(s)
    x_t = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sig_t
    x_hat = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = sample_ancestral(lambda x, sigma: x_hat, x_t, torch.stack([sig_t, sig_s]), gamma=gamma,
                           generator=torch.Generator().manual_seed(2))
    # the same step written in VP coordinates from the log-SNRs
    lam_t, lam_s = sched.log_snr(t), sched.log_snr(s)
    alpha_t, alpha_s = lam_t.sigmoid().sqrt(), lam_s.sigmoid().sqrt()
    var_t, var_s = (-lam_t).sigmoid(), (-lam_s).sigmoid()
    ratio = (lam_t - lam_s).exp()
    mean = ratio * alpha_s / alpha_t * (alpha_t * x_t) + (1 - ratio) * alpha_s * x_hat
    var = ((1 - ratio) * var_s) ** (1 - gamma) * ((1 - ratio) * var_t) ** gamma
    eps = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(to_vp(out, sig_s), mean + var.sqrt() * eps, rtol=1e-12, atol=1e-12)


def test_point_mass_is_reached_and_every_marginal_has_the_right_spread():
    """With the exact denoiser of a point mass c, x at each level is c + sigma eps and ends at c."""
    sched = CosineSchedule()
    sigmas = sched.sigmas(16, dtype=torch.float64)
    noise = torch.randn(40_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spreads = []
    out = sample_ancestral(_constant(0.7), prior_sample(noise, sigmas), sigmas,
                           generator=torch.Generator().manual_seed(1),
                           callback=lambda s: spreads.append(((s["x"] - 0.7).std() / s["sigma_next"]).item()))
    assert_close_ulps(out, torch.full_like(out, 0.7))
    for i, ratio in enumerate(spreads[:-1]):
        assert ratio == pytest.approx(1.0, abs=0.02), f"step {i}"


def _diffusers_ddpm(prediction, variance_type):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          prediction_type=prediction, variance_type=variance_type)
    sched.set_timesteps(50)
    sched.alphas_cumprod, sched.one = sched.alphas_cumprod.double(), sched.one.double()
    return sched


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("variance_type,gamma", [("fixed_small", 0.0), ("fixed_large", 1.0)])
def test_discrete_schedule_equals_diffusers_ddpm(prediction, variance_type, gamma):
    """Over SD's table the ancestral sampler is DDPM (Ho et al. 2020): posterior or beta_t variance."""
    theirs = _diffusers_ddpm(prediction, variance_type)
    ours = DiscreteVPSchedule(theirs.alphas_cumprod)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1).double()
    torch.nn.init.normal_(conv.weight, std=0.05, generator=torch.Generator().manual_seed(0))

    def net(z, t):
        with torch.no_grad():
            return torch.tanh(conv(z)) * torch.cos(torch.as_tensor(t, dtype=z.dtype).reshape(-1, 1, 1, 1) / 400)

    z = z_T = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    gen, expected = torch.Generator().manual_seed(4), []
    for t in theirs.timesteps:
        z = theirs.step(net(z, t), t, z, generator=gen).prev_sample
        expected.append(z)
    sigmas = torch.cat([ours.sigmas[theirs.timesteps], torch.zeros(1, dtype=torch.float64)])
    scaling = (EpsScaling if prediction == "epsilon" else VScaling)(ours)
    steps = []
    sample_ancestral(precondition(net, scaling), prior_sample(z_T, sigmas), sigmas, gamma=gamma,
                     generator=torch.Generator().manual_seed(4),
                     callback=lambda s: steps.append(to_vp(s["x"], s["sigma_next"])))
    for i, (got, want) in enumerate(zip(steps, expected)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=f"step {i}")


def test_seeds_decide_the_sample_and_per_sample_generators_ignore_the_batch():
    sched = CosineSchedule()
    sigmas = sched.sigmas(8, dtype=torch.float64)
    den = precondition(lambda z, t: 0.3 * z * (1 + t.reshape(-1, 1)), EpsScaling(sched))
    x = prior_sample(torch.randn(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64), sigmas)
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    a = sample_ancestral(den, x, sigmas, generator=gens(1, 2, 3))
    assert_close_ulps(a, sample_ancestral(den, x, sigmas, generator=gens(1, 2, 3)))
    assert_close_ulps(a[2:], sample_ancestral(den, x[2:], sigmas, generator=gens(3)))
    b = sample_ancestral(den, x, sigmas, generator=gens(1, 2, 4))
    assert_close_ulps(a[:2], b[:2])
    assert not torch.allclose(a[2], b[2])
    frames = step_noise(torch.zeros(4, 2), gens(5, 6))   # 2 generators: 2 rows (frames) each
    assert torch.equal(frames[2:], torch.randn(2, 2, generator=torch.Generator().manual_seed(6)))  # drawn, not computed


def test_gamma_outside_unit_interval_is_refused():
    with pytest.raises(ValueError, match=r"gamma .* \[0, 1\]"):
        sample_ancestral(_constant(0.0), torch.zeros(2), torch.tensor([1.0, 0.0]), gamma=1.5)


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_ancestral_step_split_is_exact_in_float32_from_any_height(eta):
    """sigma_down^2 = sigma_to^2 - sigma_up^2 cancels when sigma_to << sigma_from (VDM's first step
    falls from e^10 to ~3.7): written as sigma_to sqrt(1 - eta^2 + eta^2 r) it stays within a few
    float32 ulps of the exact value (the definitions in 40-digit decimals), and the step within a
    few ulps of DDPM's posterior mean."""
    from decimal import Decimal, getcontext

    getcontext().prec = 40
    for hi, lo in ((22026.465, 3.7316), (80.0, 79.9), (14.6, 0.0292), (1.0, 0.5)):
        f_hi, f_lo = torch.tensor(hi), torch.tensor(lo)                      # float32 inputs
        down, up = get_ancestral_step(f_hi, f_lo, eta)
        H, L, E = Decimal(float(f_hi)), Decimal(float(f_lo)), Decimal(eta)
        up_exact = (E * E * L * L * (H * H - L * L) / (H * H)).sqrt()
        down_exact = (L * L - up_exact * up_exact).sqrt()
        assert_close_ulps(down, torch.tensor(float(down_exact)), ulps=4, msg=f"sigma_down {hi}->{lo}")
        # sigma_up of near-equal levels is as exact as sigma_to itself (1 - r carries its rounding)
        assert_close_ulps(up, torch.tensor(float(up_exact)), ulps=4, scale=lo, msg=f"sigma_up {hi}->{lo}")
    # eta = 1 is the posterior: mean r x + (1 - r) D with r = sigma_to^2 / sigma_from^2
    hi, lo = torch.tensor(22026.465), torch.tensor(3.7316)
    g = torch.Generator().manual_seed(0)
    x, d = torch.randn(64, generator=g) * hi, torch.randn(64, generator=g)
    got = step_ancestral(x, d, hi, lo, generator=torch.Generator().manual_seed(1))
    r = (lo.double() / hi.double()) ** 2
    z = torch.randn(64, generator=torch.Generator().manual_seed(1))
    expected = r * x.double() + (1 - r) * d.double() + ((1 - r) * lo.double() ** 2).sqrt() * z.double()
    assert_close_ulps(got, expected.float(), ulps=4)
