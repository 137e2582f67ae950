"""VP schedules: SD's tables and DDIM grids against diffusers, sigma <-> t round trips, cosine ends."""
from __future__ import annotations

import math

import pytest
import torch

from svdcli.diffusion.schedules import CosineSchedule, DiscreteVPSchedule
from numeric import assert_close_ulps


def _diffusers_ddim(**config):
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, **config)


def test_scaled_linear_is_sd_table():
    sched = DiscreteVPSchedule.scaled_linear()
    a = sched.alphas_cumprod
    assert a.dtype == torch.float64 and sched.num_timesteps == 1000
    betas = 1 - a / torch.cat([a.new_ones(1), a[:-1]])
    assert betas[0].item() == pytest.approx(0.00085, rel=1e-12)
    assert betas[-1].item() == pytest.approx(0.012, rel=1e-12)
    assert betas.sqrt().diff().std() < 1e-12          # linear in sqrt(beta)
    theirs = _diffusers_ddim().alphas_cumprod.double()  # built in float32
    torch.testing.assert_close(a, theirs, rtol=2e-6, atol=0)
    assert sched.sigmas[0].item() == pytest.approx(math.sqrt(0.00085 / (1 - 0.00085)), rel=1e-12)


def test_linear_is_ddpm_table():
    from diffusers import DDPMScheduler

    theirs = DDPMScheduler(beta_schedule="linear").alphas_cumprod.double()
    torch.testing.assert_close(DiscreteVPSchedule.linear().alphas_cumprod, theirs, rtol=2e-6, atol=0)


def test_sigma_of_integer_t_is_the_table_and_t_inverts_it():
    sched = DiscreteVPSchedule.scaled_linear()
    t = torch.arange(1000)
    a = sched.alphas_cumprod
    assert_close_ulps(sched.sigma(t), ((1 - a) / a).sqrt())
    assert torch.equal(sched.t(sched.sigma(t)), t.double())  # quantized: an index, found by nearest sigma
    assert torch.equal(sched.t(sched.sigma(t).float()), t.float())  # float32 sigmas keep their index
    # nearest in sigma, as sgm's DiscreteDenoiser quantizes
    mid = (sched.sigmas[500] * 0.3 + sched.sigmas[501] * 0.7).reshape(1)
    assert sched.t(mid).item() == 501


def test_fractional_t_round_trips_and_interpolates_log_sigma():
    sched = DiscreteVPSchedule.scaled_linear(quantize=False)
    t = torch.rand(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 999
    torch.testing.assert_close(sched.t(sched.sigma(t)), t, rtol=0, atol=1e-9)
    half = sched.sigma(torch.tensor(100.5)).log()
    assert half.item() == pytest.approx((sched.sigmas[100].log() + sched.sigmas[101].log()).item() / 2, rel=1e-12)
    assert sched.t(torch.tensor([0.0, 1e6], dtype=torch.float64)).tolist() == [0.0, 999.0]  # clamped ends


@pytest.mark.parametrize("spacing,offset,n", [("leading", 1, 50), ("leading", 0, 50), ("leading", 1, 30),
                                              ("trailing", 0, 50), ("trailing", 0, 30), ("leading", 1, 1)])
def test_ddim_timesteps_are_diffusers(spacing, offset, n):
    theirs = _diffusers_ddim(timestep_spacing=spacing, steps_offset=offset)
    theirs.set_timesteps(n)
    sched = DiscreteVPSchedule.scaled_linear()
    assert torch.equal(sched.ddim_timesteps(n, spacing, offset), theirs.timesteps)
    sigmas = sched.ddim_sigmas(n, spacing, offset, dtype=torch.float64)
    # with steps_offset 0 the last step goes from alpha_bar_0 to alpha_bar_0, as in diffusers
    assert len(sigmas) == n + 1 and bool((sigmas[:-1].diff() < 0).all()) and sigmas[-2] >= sigmas[-1]
    assert sigmas[-1] == sched.sigmas[0]            # alpha_bar_0: SD ends there, not at sigma 0
    assert sched.ddim_sigmas(n, spacing, offset, set_alpha_to_one=True)[-1] == 0


def test_sd_leading_grid_is_ldm_uniform():
    """SD 2.1's scheduler (leading, steps_offset 1) visits ldm's 'uniform' DDIM steps 981..1."""
    ts = DiscreteVPSchedule.scaled_linear().ddim_timesteps(50)
    assert ts[0] == 981 and ts[-1] == 1 and torch.equal(ts.diff(), torch.full((49,), -20))


def test_discrete_schedule_rejects_bad_input():
    sched = DiscreteVPSchedule.scaled_linear()
    with pytest.raises(ValueError, match="'leading' or 'trailing'"):
        sched.ddim_timesteps(50, "linspace")
    with pytest.raises(ValueError, match="1 to 1000 steps"):
        sched.ddim_timesteps(1001)
    with pytest.raises(ValueError, match="outside 0..999"):
        sched.ddim_timesteps(50, "leading", steps_offset=30)
    with pytest.raises(ValueError, match="strictly decreasing"):
        DiscreteVPSchedule(torch.tensor([0.9, 0.95, 0.5]))


def test_cosine_log_snr_form_ends_at_its_bounds():
    sched = CosineSchedule()  # -20..20
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(sched.log_snr(ends), torch.tensor([20.0, -20.0], dtype=torch.float64))
    torch.testing.assert_close(sched.sigma(ends), torch.tensor([math.exp(-10), math.exp(10)], dtype=torch.float64))
    assert sched.alpha_bar(torch.tensor(0.0)).item() == pytest.approx(1 / (1 + math.exp(-20)), rel=1e-14)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    ab, sig = sched.alpha_bar(t), sched.sigma(t)
    torch.testing.assert_close(ab, 1 / (1 + sig**2), rtol=1e-12, atol=0)  # sigma^2 = (1 - ab) / ab
    torch.testing.assert_close(sched.log_snr(t), -2 * sig.log(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sched.t(sig), t, rtol=0, atol=1e-12)
    assert bool((ab.diff() < 0).all())


def test_nichol_dhariwal_cosine_is_the_paper_formula():
    s = 0.008
    sched = CosineSchedule.nichol_dhariwal(s)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    expected = torch.cos(math.pi / 2 * (t + s) / (1 + s)) ** 2
    torch.testing.assert_close(sched.alpha_bar(t), expected, rtol=1e-12, atol=1e-15)
    assert sched.alpha_bar(torch.tensor(1.0)).item() < 1e-30    # pure noise at t = 1
    assert sched.alpha_bar(torch.tensor(0.0)).item() == pytest.approx(math.cos(math.pi / 2 * s / (1 + s)) ** 2)


def test_cosine_sampling_grid():
    sched = CosineSchedule()
    sigmas = sched.sigmas(4, dtype=torch.float64)
    expected = sched.sigma(torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64))
    assert_close_ulps(sigmas[:4], expected)
    assert sigmas[-1] == 0
    assert sched.sigmas(4).dtype == torch.float32
    with pytest.raises(ValueError, match="below logsnr_max"):
        CosineSchedule(logsnr_min=5.0, logsnr_max=-5.0)


def test_training_sigmas_are_the_table_at_uniform_timesteps():
    sched = DiscreteVPSchedule.scaled_linear()
    s = sched.sample_sigmas(4000, torch.Generator().manual_seed(0))
    t = sched.t(s.double())
    assert s.dtype == torch.float32
    torch.testing.assert_close(s.double(), sched.sigmas[t.long()], rtol=1e-7, atol=0)   # float32 copies of the table
    counts = torch.bincount(t.long() // 100, minlength=10).float()
    assert counts.min() > 300 and counts.max() < 500                   # uniform over t: ~400 per tenth
