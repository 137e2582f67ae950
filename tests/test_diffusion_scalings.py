"""Scalings: hand formulas, SVD's denoiser unchanged (to float rounding), exact x0 from true eps / v."""
from __future__ import annotations

import math

import pytest
import torch

from svdcli.diffusion import edm
from svdcli.diffusion.edm import precondition
from svdcli.diffusion.scalings import EDMScaling, EpsScaling, VScaling, VScalingWithEDMcNoise, from_vp, to_vp
from svdcli.diffusion.schedules import CosineSchedule, DiscreteVPSchedule
from numeric import assert_close_ulps

SIGMAS = [0.0292, 0.3, 1.0, 4.7, 14.6, 80.0]


def _hand(sigma: float, kind: str, sd: float = 0.5) -> tuple[float, float, float]:
    """(c_skip, c_out, c_in) written out from the papers, one float at a time."""
    if kind == "edm":        # Karras et al. 2022, Table 1
        return sd**2 / (sigma**2 + sd**2), sigma * sd / math.sqrt(sigma**2 + sd**2), 1 / math.sqrt(sigma**2 + sd**2)
    alpha = 1 / math.sqrt(1 + sigma**2)          # VP signal scale at this sigma
    s_vp = sigma / math.sqrt(1 + sigma**2)       # VP noise scale
    if kind == "eps":        # x0 = (z - s_vp eps) / alpha = x - sigma eps
        return 1.0, -sigma, alpha
    return alpha**2, -s_vp, alpha                # v: x0 = alpha z - s_vp v, z = alpha x


@pytest.mark.parametrize("sigma", SIGMAS)
def test_factors_match_hand_formulas(sigma):
    s = torch.tensor([sigma], dtype=torch.float64)
    sched = DiscreteVPSchedule.scaled_linear()
    cases = [(EDMScaling(), "edm", 0.5), (EDMScaling(1.0), "edm", 1.0), (EpsScaling(sched), "eps", None),
             (VScaling(sched), "v", None), (VScalingWithEDMcNoise(), "v", None)]
    for scaling, kind, sd in cases:
        got = [c.item() for c in scaling(s)[:3]]
        for name, g, h in zip(("c_skip", "c_out", "c_in"), got, _hand(sigma, kind, sd)):
            assert g == pytest.approx(h, rel=1e-14, abs=0), (scaling, name)
    assert EDMScaling().c_noise(s).item() == pytest.approx(math.log(sigma) / 4, rel=1e-14)
    assert VScalingWithEDMcNoise().c_noise(s).item() == pytest.approx(math.log(sigma) / 4, rel=1e-14)


def test_vp_scalings_label_with_the_schedule_time():
    disc = DiscreteVPSchedule.scaled_linear()
    t = torch.tensor([0, 1, 261, 981, 999])
    assert torch.equal(EpsScaling(disc).c_noise(disc.sigma(t)), t.double())  # an index, found by nearest sigma
    cos = CosineSchedule()
    tc = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    assert torch.allclose(VScaling(cos).c_noise(cos.sigma(tc)), tc, atol=1e-12)


def _random_unet():
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(0)
    net = VideoUNet(UNetConfig.tiny(channel_mult=(1, 2), attention_resolutions=(1,)))
    with torch.no_grad():  # the output conv starts at zero; make F visible in D
        for p in net.out.parameters():
            p.normal_(0, 0.2)
    return net.eval()


def test_svd_denoiser_output_is_the_formula_it_always_used():
    net = _random_unet()
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = {"crossattn": torch.randn(4, 1, 40), "vector": torch.randn(4, 24), "concat": torch.randn(4, 4, 8, 8)}
    sigma = torch.tensor([0.02, 0.7, 3.0, 700.0])
    with torch.no_grad():
        d_default = edm.Denoiser(net)(x, sigma, cond, 2)
        d_explicit = edm.Denoiser(net, VScalingWithEDMcNoise())(x, sigma, cond, 2)
        s = sigma[:, None, None, None]
        # the forward pass edm.Denoiser had before scalings became objects, term by term
        f = net(torch.cat([x * (1.0 / (s**2 + 1.0) ** 0.5), cond["concat"]], 1), (0.25 * s.log()).reshape(4),
                cond["crossattn"], cond["vector"], 2, None)
        by_hand = f * (-s / (s**2 + 1.0) ** 0.5) + x * (1.0 / (s**2 + 1.0))
        d_edm1 = edm.Denoiser(net, EDMScaling(1.0))(x, sigma, cond, 2)
    assert_close_ulps(d_default, by_hand)
    assert_close_ulps(d_explicit, by_hand)
    # EDM's own factors differ from SVD's in the sign of c_out only
    assert torch.allclose(d_edm1, f * (s / (s**2 + 1.0) ** 0.5) + x / (s**2 + 1.0), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(d_edm1, d_default, atol=1e-2)
    assert list(edm.Denoiser(net, EpsScaling(DiscreteVPSchedule.scaled_linear())).state_dict()) == \
        list(edm.Denoiser(net).state_dict())


def _noisy_problem(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, 4, 4, generator=g, dtype=dtype)
    eps = torch.randn(5, 3, 4, 4, generator=g, dtype=dtype)
    sigma = torch.tensor(SIGMAS[:5], dtype=dtype)
    s = sigma[:, None, None, None]
    return x0, eps, sigma, x0 + s * eps


def test_eps_and_v_scalings_return_x0_when_the_network_is_right():
    x0, eps, sigma, x = _noisy_problem()
    s = sigma[:, None, None, None]
    alpha, s_vp = 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
    z = alpha * x0 + s_vp * eps                       # what a VP network was trained on
    seen = []

    def true_eps(z_in, t):
        seen.append((z_in, t))
        return eps

    def true_v(z_in, t):
        return alpha * eps - s_vp * x0               # Salimans & Ho 2022, v = alpha eps - s x0

    sched = DiscreteVPSchedule.scaled_linear(quantize=False)
    d_eps = precondition(true_eps, EpsScaling(sched))(x, sigma)
    d_v = precondition(true_v, VScaling(sched))(x, sigma)
    torch.testing.assert_close(d_eps, x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(d_v, x0, rtol=0, atol=1e-12)
    torch.testing.assert_close(seen[0][0], z, rtol=0, atol=1e-12)
    assert_close_ulps(seen[0][1], sched.t(sigma))


def test_svd_v_scaling_returns_x0_for_the_true_v():
    x0, eps, sigma, x = _noisy_problem()
    s = sigma[:, None, None, None]
    v = (eps - s * x0) / (1 + s**2).sqrt()
    torch.testing.assert_close(precondition(lambda z, c: v, VScalingWithEDMcNoise())(x, sigma), x0,
                               rtol=0, atol=1e-12)


def test_edm_denoiser_wraps_a_vp_network_and_relabels_on_request():
    """A VP eps network behind edm.Denoiser sees z_t and the integer timestep of sigma."""
    sched = DiscreteVPSchedule.scaled_linear()
    labels = []

    class EpsNet(torch.nn.Module):
        def forward(self, z, t, crossattn, vector, frames, indicator):
            labels.append(t)
            return z * 0.5

    den = edm.Denoiser(EpsNet(), EpsScaling(sched))
    sigma = sched.sigma(torch.tensor([981, 500])).float()
    x = torch.randn(2, 4, 8, 8)
    d = den(x, sigma, {}, 1)
    z = x / (1 + sigma[:, None, None, None] ** 2).sqrt()
    torch.testing.assert_close(d, x - sigma[:, None, None, None] * 0.5 * z)
    assert labels[0].tolist() == [981.0, 500.0]
    den(x, sigma, {}, 1, noise_sigma=sched.sigma(torch.tensor([999, 520])))
    assert labels[1].tolist() == [999.0, 520.0]


def test_vp_conversions_round_trip():
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    sigma = torch.tensor([0.1, 2.0, 14.6], dtype=torch.float64)
    torch.testing.assert_close(from_vp(to_vp(x, sigma), sigma), x, rtol=1e-15, atol=0)
    assert torch.allclose(to_vp(x, 3.0), x / math.sqrt(10.0))


def test_loss_weight_makes_the_x0_error_the_networks_own_objective():
    """lambda ||D - x0||^2 with lambda = scaling.loss_weight is the MSE of eps (eps network) or
    v = alpha eps - s x0 (v network, Salimans & Ho 2022) written out by hand, and EDM eq. 8."""
    from svdcli.diffusion.scalings import for_prediction

    sched = DiscreteVPSchedule.scaled_linear()
    g = torch.Generator().manual_seed(0)
    sigma = sched.sigmas[torch.tensor([0, 10, 500, 999])].reshape(-1, 1, 1, 1)   # (4, 1, 1, 1) float64
    x0, eps, f = (torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64) for _ in range(3))
    x = x0 + sigma * eps
    alpha, s_vp = 1 / (1 + sigma**2).sqrt(), sigma / (1 + sigma**2).sqrt()
    targets = {"eps": eps, "v": alpha * eps - s_vp * x0, "edm": alpha * eps - s_vp * x0}
    for prediction, target in targets.items():
        scaling = for_prediction(prediction, sched)
        skip, out, _, _ = scaling(sigma)
        d = skip * x + out * f                                    # D with network output f
        weighted = scaling.loss_weight(sigma) * (d - x0) ** 2
        torch.testing.assert_close(weighted, (f - target) ** 2, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(for_prediction("edm").loss_weight(sigma), edm.loss_weight(sigma))
    with pytest.raises(ValueError, match="schedule"):
        for_prediction("v")
