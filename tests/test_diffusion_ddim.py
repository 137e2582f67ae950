"""DDIM and DDIM inversion against diffusers' DDIMScheduler / DDIMInverseScheduler, step for step."""
from __future__ import annotations

import pytest
import torch

from svdcli.diffusion import edm
from svdcli.diffusion.ddim import invert_ddim, sample_ddim
from svdcli.diffusion.samplers import prior_sample, sample_ancestral, sample_euler
from svdcli.diffusion.edm import precondition
from svdcli.diffusion.scalings import EpsScaling, VScaling, from_vp, to_vp
from svdcli.diffusion.schedules import DiscreteVPSchedule
from numeric import assert_close_ulps

SCALING = {"epsilon": EpsScaling, "v_prediction": VScaling}


def _fixed_net(dtype=torch.float64):
    """A fixed random 'network' F(z_t, t): a 3x3 conv, squashed, modulated by the timestep."""
    conv = torch.nn.Conv2d(4, 4, 3, padding=1).to(dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(7)) * 0.2)
        conv.bias.zero_()

    def net(z, t):
        t = torch.as_tensor(t, dtype=z.dtype).reshape(-1, 1, 1, 1)
        with torch.no_grad():
            return torch.tanh(conv(z)) * torch.cos(t / 300) + 0.1 * torch.sin(t / 150)

    return net


def _scheduler(cls_name, prediction, spacing, offset, dtype):
    import diffusers

    sched = getattr(diffusers, cls_name)(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         clip_sample=False, set_alpha_to_one=False, steps_offset=offset,
                                         prediction_type=prediction, timestep_spacing=spacing)
    sched.set_timesteps(50)
    if dtype == torch.float64:  # diffusers' float32 tables would cap the agreement at ~1e-7
        sched.alphas_cumprod = sched.alphas_cumprod.double()
        for name in ("final_alpha_cumprod", "initial_alpha_cumprod"):
            if hasattr(sched, name):
                setattr(sched, name, getattr(sched, name).double())
    return sched


def _latents(dtype, seed=0):
    return torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("leading", 0), ("trailing", 0)])
@pytest.mark.parametrize("eta", [0.0, 0.6])
def test_ddim_equals_diffusers_every_step_float64(prediction, spacing, offset, eta):
    net = _fixed_net()
    theirs = _scheduler("DDIMScheduler", prediction, spacing, offset, torch.float64)
    ours = DiscreteVPSchedule(theirs.alphas_cumprod)      # the very same table
    sigmas = ours.ddim_sigmas(50, spacing, offset, dtype=torch.float64)
    z_T = _latents(torch.float64)
    expected, z = [], z_T
    gen = torch.Generator().manual_seed(3)
    for t in theirs.timesteps:
        z = theirs.step(net(z, t), t, z, eta=eta, generator=gen).prev_sample
        expected.append(z)
    steps = []
    den = precondition(net, SCALING[prediction](ours))
    sample_ddim(den, prior_sample(z_T, sigmas), sigmas, eta=eta, generator=torch.Generator().manual_seed(3),
                callback=lambda s: steps.append(to_vp(s["x"], s["sigma_next"])))
    assert len(steps) == 50
    for i, (got, want) in enumerate(zip(steps, expected)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=f"step {i}")


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_through_edm_denoiser_equals_diffusers_float32(prediction):
    """The module path in float32 with our own SD table: diffusers' result to 1e-4."""
    net = _fixed_net(torch.float32)

    class VPNet(torch.nn.Module):  # SVD's network signature around a VP network
        def forward(self, z, t, crossattn, vector, frames, indicator):
            return net(z, t)

    theirs = _scheduler("DDIMScheduler", prediction, "leading", 1, torch.float32)
    ours = DiscreteVPSchedule.scaled_linear()
    den = edm.Denoiser(VPNet(), SCALING[prediction](ours))
    sigmas = ours.ddim_sigmas(50)
    z = z_T = _latents(torch.float32)
    gen = torch.Generator().manual_seed(5)
    for t in theirs.timesteps:
        z = theirs.step(net(z, t), t, z, eta=0.5, generator=gen).prev_sample
    x = sample_ddim(den, prior_sample(z_T, sigmas), sigmas, eta=0.5, generator=torch.Generator().manual_seed(5),
                    extra_args={"cond": {}, "num_video_frames": 1})
    # measured: 6e-5 for eps (values up to 65), 2e-6 for v
    torch.testing.assert_close(to_vp(x, sigmas[-1]), z, rtol=0, atol=1e-4)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing,offset", [("leading", 1), ("trailing", 0)])
def test_inversion_equals_diffusers_inverse_scheduler(prediction, spacing, offset):
    """As diffusers' pipelines use it: the network is called with each step's (target) timestep."""
    net = _fixed_net()
    theirs = _scheduler("DDIMInverseScheduler", prediction, spacing, offset, torch.float64)
    ours = DiscreteVPSchedule(theirs.alphas_cumprod)
    sigmas = ours.ddim_sigmas(50, spacing, offset, dtype=torch.float64).flip(0)
    z0 = _latents(torch.float64, seed=1)
    expected, z = [], z0
    for t in theirs.timesteps:
        z = theirs.step(net(z, t), t, z).prev_sample
        expected.append(z)
    steps = []
    invert_ddim(precondition(net, SCALING[prediction](ours)), from_vp(z0, sigmas[0]), sigmas,
                callback=lambda s: steps.append(to_vp(s["x"], s["sigma_next"])))
    for i, (got, want) in enumerate(zip(steps, expected)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=f"step {i}")


def _gaussian_eps_net(sched, sd=1.0):
    """The exact eps of data ~ N(0, sd^2), as a VP network of (z_t, timestep): smooth in t."""
    def net(z, t):
        s = sched.sigma(t).to(z.dtype).reshape(-1, 1, 1, 1)
        x = z * (1 + s**2).sqrt()
        return (x - x * sd**2 / (sd**2 + s**2)) / s
    return net


def _smooth_net():
    """A fixed random conv eps 'network', slowly varying in t (no data distribution behind it)."""
    conv = torch.nn.Conv2d(4, 4, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.03)
        conv.bias.zero_()

    def net(z, t):
        t = torch.as_tensor(t, dtype=z.dtype).reshape(-1, 1, 1, 1)
        with torch.no_grad():
            return torch.tanh(conv(z)) * (0.5 + 0.5 * torch.cos(t / 1000))
    return net


def _round_trip_error(den, sched, n, label):
    sigmas = sched.ddim_sigmas(n, dtype=torch.float64)
    z0 = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_T = invert_ddim(den, from_vp(z0, sigmas[-1]), sigmas.flip(0), label=label)
    err = to_vp(sample_ddim(den, x_T, sigmas), sigmas[-1]) - z0
    return (err.pow(2).mean().sqrt() / z0.pow(2).mean().sqrt()).item()


def test_inversion_then_sampling_reconstructs_the_start():
    """Relative RMS error after inverting and resampling, SD schedule, eps network.

    Measured at 50 steps: exact Gaussian model 8.1e-4 (target labels), 5.2e-2 (current labels);
    the fixed random conv model 3.0e-2 / 3.2e-2 (halving at 100 steps). Target labels make the
    inversion step the mirror image of the sampling step (one label on both sides of every
    interval): on the Gaussian model the error then falls as 1/n^2, against 1/n for the plain
    Euler inversion.
    """
    sched = DiscreteVPSchedule.scaled_linear()
    gauss = precondition(_gaussian_eps_net(sched), EpsScaling(sched))
    target = {n: _round_trip_error(gauss, sched, n, "target") for n in (50, 100)}
    current = {n: _round_trip_error(gauss, sched, n, "current") for n in (50, 100)}
    assert target[50] < 1.5e-3 and current[50] < 0.07
    assert 3.0 < target[50] / target[100] < 5.0
    assert 1.6 < current[50] / current[100] < 2.4
    smooth = precondition(_smooth_net(), EpsScaling(sched))
    assert _round_trip_error(smooth, sched, 50, "target") < 0.035
    assert _round_trip_error(smooth, sched, 50, "current") < 0.04


def test_eta_zero_is_euler_and_eta_one_is_ancestral():
    sched = DiscreteVPSchedule.scaled_linear()
    den = precondition(_fixed_net(), VScaling(sched))
    sigmas = sched.ddim_sigmas(20, dtype=torch.float64)
    x = prior_sample(_latents(torch.float64), sigmas)
    torch.testing.assert_close(sample_ddim(den, x, sigmas), sample_euler(den, x, sigmas), rtol=0, atol=1e-12)
    one = sample_ddim(den, x, sigmas, eta=1.0, generator=torch.Generator().manual_seed(2))
    anc = sample_ancestral(den, x, sigmas, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(one, anc, rtol=0, atol=1e-12)
    up = sigmas.flip(0)
    torch.testing.assert_close(invert_ddim(den, x, up, label="current"), sample_euler(den, x, up), rtol=0, atol=1e-12)


def test_per_sample_generators_make_a_sample_independent_of_its_batch():
    sched = DiscreteVPSchedule.scaled_linear()
    den = precondition(_fixed_net(), EpsScaling(sched))
    sigmas = sched.ddim_sigmas(10, dtype=torch.float64)
    x = prior_sample(_latents(torch.float64), sigmas)
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    pair = sample_ddim(den, x, sigmas, eta=0.8, generator=gens(11, 12))
    alone = sample_ddim(den, x[1:], sigmas, eta=0.8, generator=gens(12))
    assert_close_ulps(pair[1:], alone)  # batch of 2 vs 1: other kernel blocking
    other = sample_ddim(den, x, sigmas, eta=0.8, generator=gens(11, 13))
    assert_close_ulps(other[0], pair[0])
    assert not torch.allclose(other[1], pair[1])


def test_bad_arguments_are_named():
    sched = DiscreteVPSchedule.scaled_linear()
    den = precondition(_fixed_net(), EpsScaling(sched))
    x = _latents(torch.float64)
    up = sched.ddim_sigmas(5, dtype=torch.float64).flip(0)
    with pytest.raises(ValueError, match="eta must be in"):
        sample_ddim(den, x, up.flip(0), eta=1.5)
    with pytest.raises(ValueError, match="positive noise level"):
        invert_ddim(den, x, sched.ddim_sigmas(5, set_alpha_to_one=True, dtype=torch.float64).flip(0))
    with pytest.raises(ValueError, match="ascending"):
        invert_ddim(den, x, torch.cat([up[:1], up.flip(0)]))
    with pytest.raises(ValueError, match="'target' or 'current'"):
        invert_ddim(den, x, up, label="next")
    with pytest.raises(ValueError, match="equal groups"):
        sample_ddim(den, x, up.flip(0), eta=0.5, generator=[torch.Generator()] * 3)
