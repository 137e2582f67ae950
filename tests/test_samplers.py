"""Samplers against the official sampler's recorded steps, and their numerical behaviour."""
import json

import pytest
import torch

from svdcli.diffusion.samplers import (per_sample_noise, prior_sample, sample_euler, sample_heun)
from numeric import assert_ulp_distance


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
