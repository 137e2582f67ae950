"""Samplers against the official sampler's recorded steps, and their numerical behaviour."""
import json

import pytest
import torch

from svdcli.diffusion.samplers import (per_sample_noise, prior_sample, sample_euler, sample_heun)
from numeric import assert_close_ulps, assert_ulp_distance


def _load(fixtures_dir, case):
    from safetensors.torch import load_file

    data = load_file(str(fixtures_dir / "sample_tiny_io.safetensors"))
    return {k[len(case) + 1:]: v.clone() for k, v in data.items() if k.startswith(case + "_")}


@pytest.mark.parametrize("case", ["b1", "b2"])
def test_euler_loop_reproduces_official_steps(fixtures_dir, case):
    """Fed the official guided estimates D_i, our Euler loop lands on every recorded x_{i+1}."""
    t = _load(fixtures_dir, case)
    calls = []

    def replay(x, sigma, **_):
        i = len(calls)
        calls.append(sigma.clone())
        return t[f"step{i}_denoised_guided"]

    steps = []
    x0 = prior_sample(t["noise"], t["sigmas"])
    assert_ulp_distance(x0, t["x_init_scaled"], 2)
    out = sample_euler(replay, x0, t["sigmas"], callback=lambda s: steps.append(s["x"]))
    assert len(calls) == 4 and calls[0].shape == (t["noise"].shape[0],)
    for i, x in enumerate(steps):
        torch.testing.assert_close(x, t[f"step{i}_x_next"], atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(out, t["samples"], atol=1e-3, rtol=1e-5)


def test_prior_scale_matches_official_float32(fixtures_dir):
    ref = json.loads((fixtures_dir / "edm_reference.json").read_text())["EDMDiscretization"]
    sigmas = torch.tensor(ref["n4"]["float32"], dtype=torch.float32)
    scale = prior_sample(torch.ones(1), sigmas).item()
    assert scale == ref["n4"]["init_noise_scale_sqrt_1_plus_sigma0_sq_float32"]


def _gaussian_problem(s_data=0.5):
    """Data ~ N(0, s_data^2): the exact denoiser and ODE solution are known in closed form."""
    def denoiser(x, sigma):
        return x * (s_data ** 2 / (s_data ** 2 + sigma[:, None] ** 2))

    def exact(x_start, s0, s1):
        return x_start * ((s_data ** 2 + s1 ** 2) / (s_data ** 2 + s0 ** 2)) ** 0.5

    return denoiser, exact


def test_heun_converges_at_second_order_and_euler_at_first():
    """Doubling the steps cuts Heun's error about 4x and Euler's about 2x (exact Gaussian ODE)."""
    denoiser, exact = _gaussian_problem()
    x = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 10.0
    errors = {}
    for name, sampler in (("euler", sample_euler), ("heun", sample_heun)):
        for n in (10, 20):
            sigmas = torch.logspace(1, -0.7, n + 1, dtype=torch.float64)
            target = exact(x, sigmas[0], sigmas[-1])
            errors[name, n] = (sampler(denoiser, x, sigmas) - target).abs().max().item()
    assert 3.0 < errors["heun", 10] / errors["heun", 20] < 5.0
    assert 1.5 < errors["euler", 10] / errors["euler", 20] < 2.5
    assert errors["heun", 20] < errors["euler", 20] / 5


def test_heun_last_step_to_zero_is_plain_euler():
    denoiser, _ = _gaussian_problem()
    sigmas = torch.tensor([3.0, 0.0], dtype=torch.float64)
    x = torch.randn(4, 2, dtype=torch.float64)
    calls = []
    counted = lambda x, s: calls.append(1) or denoiser(x, s)  # noqa: E731
    torch.testing.assert_close(sample_heun(counted, x, sigmas), sample_euler(denoiser, x, sigmas))
    assert len(calls) == 1  # no correction evaluation at sigma = 0


def test_noise_of_a_video_does_not_depend_on_batch():
    alone = per_sample_noise([7], (4, 8, 16), frames=5)
    batched = per_sample_noise([3, 7, 9], (4, 8, 16), frames=5)
    assert batched.shape == (15, 4, 8, 16)
    assert torch.equal(batched[5:10], alone)  # drawn from the same seed, not computed
    assert not torch.equal(batched[:5], alone)
    assert per_sample_noise([7], (2,), dtype=torch.float64).dtype == torch.float64


def _algorithm2(denoiser, x, sigmas, *, heun, s_churn, s_tmin, s_tmax, s_noise, gen):
    """Karras et al. 2022, Algorithm 2, written out line by line (t_i = sigma_i, N steps)."""
    n = len(sigmas) - 1
    for i in range(n):
        t_i, t_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = min(s_churn / n, 2 ** 0.5 - 1) if s_tmin <= t_i <= s_tmax else 0.0        # line 4
        if gamma > 0:
            eps = torch.randn(x.shape, generator=gen, dtype=x.dtype) * s_noise             # line 5: N(0, S_noise^2 I)
        else:
            eps = torch.zeros_like(x)
        t_hat = t_i + gamma * t_i                                                          # line 6
        x_hat = x + (t_hat ** 2 - t_i ** 2) ** 0.5 * eps                                   # line 7
        d = (x_hat - denoiser(x_hat, torch.full((x.shape[0],), t_hat, dtype=x.dtype))) / t_hat   # line 8
        x = x_hat + (t_next - t_hat) * d                                                   # line 9
        if heun and t_next != 0:                                                           # line 10
            d_next = (x - denoiser(x, torch.full((x.shape[0],), t_next, dtype=x.dtype))) / t_next   # line 11
            x = x_hat + (t_next - t_hat) * (0.5 * d + 0.5 * d_next)                        # line 12
    return x


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_churn_is_edm_algorithm_2(sampler):
    """With S_churn > 0 every step inside [S_tmin, S_tmax] first raises sigma to
    sigma_hat = (1 + gamma) sigma with noise of std S_noise sqrt(sigma_hat^2 - sigma^2), then
    takes its ODE step from sigma_hat; steps outside the window draw nothing."""
    denoiser, _ = _gaussian_problem()
    sigmas = torch.tensor([80.0, 20.0, 5.0, 1.2, 0.3, 0.0], dtype=torch.float64)
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 80.0
    settings = dict(s_churn=40.0, s_tmin=0.5, s_tmax=50.0, s_noise=1.007)
    fn = {"euler": sample_euler, "heun": sample_heun}[sampler]
    got = fn(denoiser, x, sigmas, generator=torch.Generator().manual_seed(7), **settings)
    expected = _algorithm2(denoiser, x, sigmas, heun=sampler == "heun", gen=torch.Generator().manual_seed(7),
                           **settings)
    assert_close_ulps(got, expected, scale=float(x.abs().max()))
    plain = fn(denoiser, x, sigmas)
    assert (got - plain).abs().max() > 1e-2                          # the churn noise reached the sample
    # S_churn = 0 (the default) is the deterministic sampler: no noise drawn, whatever the window
    gen = torch.Generator().manual_seed(7)
    state = gen.get_state()
    assert_close_ulps(fn(denoiser, x, sigmas, generator=gen, s_churn=0.0, s_noise=2.0), plain)
    assert torch.equal(gen.get_state(), state)


def test_churn_gamma_is_capped_at_sqrt2_minus_1():
    """gamma = min(S_churn / N, sqrt(2) - 1): a huge S_churn raises sigma by at most sqrt(2)."""
    seen = []
    denoiser = lambda x, s: seen.append(float(s[0])) or torch.zeros_like(x)  # noqa: E731
    sigmas = torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64)
    sample_euler(denoiser, torch.zeros(2, 1, dtype=torch.float64), sigmas, s_churn=1e6,
                 generator=torch.Generator().manual_seed(0))
    assert seen == pytest.approx([4.0 * 2 ** 0.5, 1.0 * 2 ** 0.5], rel=1e-12)
