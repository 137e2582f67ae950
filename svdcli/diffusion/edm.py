"""EDM preconditioning, noise sampling and training loss with v-scaling and sigma_data = 1
(sgm's `VScalingWithEDMcNoise`, `EDMSampling`, `VWeighting`). Notation of Karras et al. 2022
(EDM), Table 1 and eq. 7-8; sigma_data = 1 throughout, as in SVD.

The denoiser is D(x, sigma, cond) = c_skip x + c_out F(c_in x (+) concat, c_noise); samplers
and the loss see only D. The UNet F knows nothing of EDM. The factors are a `Scaling` object
(`scalings.py`); SVD's is the default, and a VP network is wrapped the same way with
`EpsScaling` / `VScaling` of its schedule.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from svdcli.diffusion.scalings import Scaling, VScalingWithEDMcNoise

_SVD_SCALING = VScalingWithEDMcNoise()


def c_skip(sigma: torch.Tensor) -> torch.Tensor:
    """EDM Table 1 with sigma_data = 1: c_skip = 1 / (sigma^2 + 1)."""
    return _SVD_SCALING.c_skip(sigma)


def c_out(sigma: torch.Tensor) -> torch.Tensor:
    """v-scaling output factor: c_out = -sigma / sqrt(sigma^2 + 1) (sign of v-prediction)."""
    return _SVD_SCALING.c_out(sigma)


def c_in(sigma: torch.Tensor) -> torch.Tensor:
    """EDM Table 1 with sigma_data = 1: c_in = 1 / sqrt(sigma^2 + 1)."""
    return _SVD_SCALING.c_in(sigma)


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """EDM Table 1: c_noise = ln(sigma) / 4."""
    return _SVD_SCALING.c_noise(sigma)


def scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1 with v-scaling and sigma_data = 1."""
    return _SVD_SCALING(sigma)


def loss_weight(sigma: torch.Tensor) -> torch.Tensor:
    """EDM eq. 8 weighting lambda(sigma) = (sigma^2 + 1) / sigma^2 (sigma_data = 1): 1 / c_out^2."""
    return _SVD_SCALING.loss_weight(sigma)


def sample_sigmas_lognormal(n: int, P_mean: float = -1.2, P_std: float = 1.2,
                            generator: torch.Generator | None = None,
                            device: torch.device | str = "cpu") -> torch.Tensor:
    """EDM training noise levels: ln(sigma) ~ N(P_mean, P_std^2) (Table 1, 'Training')."""
    n_ = torch.randn(n, generator=generator, device=device)
    return (P_mean + P_std * n_).exp()


def _bcast(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-frame sigma (N,) -> (N, 1, 1, 1) to broadcast against x (N, C, H, W)."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


class Denoiser(nn.Module):
    """D(x, sigma, cond) = c_skip x + c_out F(cat[c_in x, concat], c_noise) (EDM eq. 7).

    `cond` holds `crossattn` (N, L, D), `vector` (N, adm) and, for image-to-video, `concat`
    (N, 4, H, W): the conditioning-frame latent, appended as channels and NOT scaled by c_in;
    an optional `temporal_crossattn` (N, L, D) is the temporal layers' own context.
    N = B*T frames in video-major order; sigma is (N,) or a scalar. `scaling` defaults to
    SVD's (`VScalingWithEDMcNoise`); it is not part of the state dict. `noise_sigma` (same
    shapes as sigma) replaces the sigma whose c_noise the network sees (see `ddim.invert_ddim`).
    """

    def __init__(self, net: nn.Module, scaling: Scaling | None = None):
        super().__init__()
        self.net = net
        self.scaling = scaling if scaling is not None else _SVD_SCALING

    def _per_frame(self, sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
        if sigma.numel() == 1:
            sigma = sigma.reshape(()).expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a scalar or one value per frame ({x.shape[0]}), "
                             f"got shape {tuple(sigma.shape)}")
        return sigma

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: dict[str, torch.Tensor],
                num_video_frames: int, image_only_indicator: torch.Tensor | None = None, *,
                noise_sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        sigma = self._per_frame(sigma, x)
        s = _bcast(sigma, x)
        skip, out, inp, noise = self.scaling(s)
        if noise_sigma is not None:
            noise = self.scaling.c_noise(_bcast(self._per_frame(noise_sigma, x), x))
        net_in = x * inp
        if cond.get("concat") is not None:
            net_in = torch.cat([net_in, cond["concat"].to(net_in.dtype)], dim=1)
        # a separate context of the temporal layers goes only to networks that have them
        extra = {"temporal_context": cond["temporal_crossattn"]} if cond.get("temporal_crossattn") is not None else {}
        f = self.net(net_in, noise.reshape(sigma.shape), cond.get("crossattn"),
                     cond.get("vector"), num_video_frames, image_only_indicator, **extra)
        return f * out + x * skip


def edm_loss(denoiser: nn.Module, x0: torch.Tensor, cond: dict[str, torch.Tensor],
             num_video_frames: int, *, P_mean: float = -1.2, P_std: float = 1.2,
             generator: torch.Generator | None = None,
             image_only_indicator: torch.Tensor | None = None,
             sigma: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             weight: Callable[[torch.Tensor], torch.Tensor] = loss_weight) -> torch.Tensor:
    """EDM eq. 8: E[lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2], one mean per video (B,).

    One sigma per video, shared by its T frames (as at sampling time), drawn log-normal unless
    `sigma` (B,) is given; `noise` defaults to N(0, 1) like x0. `weight` is lambda(sigma):
    EDM's by default; a denoiser's `scaling.loss_weight` makes it the network's own objective
    (SD's eps- or v-MSE, `Scaling.loss_weight`).
    """
    t = num_video_frames
    b = x0.shape[0] // t
    if sigma is None:
        sigma = sample_sigmas_lognormal(b, P_mean, P_std, generator, x0.device)
    sigma = sigma.to(x0.device, torch.float32).repeat_interleave(t)          # (B,) -> (B*T,)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_noisy = x0 + noise * _bcast(sigma, x0)
    denoised = denoiser(x_noisy, sigma, cond, t, image_only_indicator)
    per_frame = (weight(_bcast(sigma, x0)) * (denoised.float() - x0.float()) ** 2)
    return per_frame.reshape(b, -1).mean(dim=1)                              # (B,)
