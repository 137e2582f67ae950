"""EDM preconditioning, noise sampling and training loss with v-scaling and sigma_data = 1
(sgm's `VScalingWithEDMcNoise`, `EDMSampling`, `VWeighting`). Notation of Karras et al. 2022
(EDM), Table 1 and eq. 7-8; sigma_data = 1 throughout, as in SVD.

The denoiser is D(x, sigma, cond) = c_skip x + c_out F(c_in x (+) concat, c_noise), the
`Denoiser` module, built once here for every family; samplers and the loss see only D. The
network F knows nothing of EDM. The factors are a `Scaling` object (`scalings.py`); SVD's is the
default, and a VP network is wrapped the same way with `EpsScaling` / `VScaling` of its schedule.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from svdcli.diffusion.samplers import append_dims
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


class Denoiser(nn.Module):
    """D(x, sigma, cond) = c_skip x + c_out F(c_in x, c_noise) (EDM eq. 7): a network F and a
    `Scaling` (c_skip, c_out, c_in, c_noise as functions of sigma), with `loss` beside `forward`
    (k-diffusion's `layers.Denoiser`). Samplers, guiders and the training loss see only this.

    x is (N, C, H, W), N = B*T frames in video-major order; sigma is (N,) or a scalar, computed
    in at least float32. `scaling` defaults to SVD's (`VScalingWithEDMcNoise`) and is not part of
    the state dict. `noise_sigma` (same shapes as sigma) replaces the sigma whose c_noise the
    network sees (see `ddim.invert_ddim`).

    `network` is how F reads its inputs; by default the video UNet's call (svdcli.models.unet):
    `cond` holds `crossattn` (N, L, D), `vector` (N, adm) and, for image-to-video, `concat`
    (N, 4, H, W): the conditioning-frame latent, appended as channels and NOT scaled by c_in; an
    optional `temporal_crossattn` (N, L, D) is the temporal layers' own context. A network with
    another call overrides `network` (VDM's U-Net; `KeywordDenoiser`).

    `objective` is the loss the network was trained with, both its own: "denoised" (EDM eq. 8,
    lambda(sigma) ||D - x0||^2 with lambda = `scaling.loss_weight` = 1 / c_out^2, as sgm
    computes it), or "network" (||F - target||^2 with the scaling's closed-form target, eps or
    v, as the VDM / Imagen code computes it; exact where D - x0 loses digits at small sigma).
    """

    def __init__(self, net: nn.Module, scaling: Scaling | None = None, objective: str = "denoised"):
        super().__init__()
        if objective not in ("denoised", "network"):
            raise ValueError(f"objective must be 'denoised' or 'network', not {objective!r}")
        self.net = net
        self.scaling = scaling if scaling is not None else _SVD_SCALING
        self.objective = objective

    def network(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: dict, num_video_frames: int,
                image_only_indicator: torch.Tensor | None) -> torch.Tensor:
        """F(c_in x, c_noise) with the video UNet's call (class docstring)."""
        if cond.get("concat") is not None:
            x_in = torch.cat([x_in, cond["concat"].to(x_in.dtype)], dim=1)
        # a separate context of the temporal layers goes only to networks that have them
        extra = {"temporal_context": cond["temporal_crossattn"]} if cond.get("temporal_crossattn") is not None else {}
        return self.net(x_in, c_noise, cond.get("crossattn"), cond.get("vector"), num_video_frames,
                        image_only_indicator, **extra)

    def _per_frame(self, sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
        if sigma.numel() == 1:
            sigma = sigma.reshape(()).expand(x.shape[0])
        if sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a scalar or one value per frame ({x.shape[0]}), "
                             f"got shape {tuple(sigma.shape)}")
        return sigma

    def _predict(self, x: torch.Tensor, sigma, cond: dict | None, num_video_frames: int,
                 image_only_indicator: torch.Tensor | None, noise_sigma=None):
        """(F, c_skip, c_out) at (x, sigma): D = F c_out + x c_skip."""
        sigma = self._per_frame(sigma, x)
        skip, out, inp, noise = self.scaling(append_dims(sigma, x.ndim))
        if noise_sigma is not None:
            noise = self.scaling.c_noise(append_dims(self._per_frame(noise_sigma, x), x.ndim))
        f = self.network(x * inp, noise.reshape(sigma.shape), cond or {}, num_video_frames, image_only_indicator)
        return f, skip, out

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: dict | None = None,
                num_video_frames: int = 1, image_only_indicator: torch.Tensor | None = None, *,
                noise_sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """D(x; sigma) (EDM eq. 7)."""
        f, skip, out = self._predict(x, sigma, cond, num_video_frames, image_only_indicator, noise_sigma)
        return f * out + x * skip

    def loss(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, cond: dict | None = None,
             num_video_frames: int = 1, image_only_indicator: torch.Tensor | None = None) -> torch.Tensor:
        """Per-video loss (B,) of x0 (B*T, ...) noised with `noise` at one sigma (B,) per video (its
        T frames share it, as at sampling time): the network's own objective (class docstring)."""
        if self.objective == "denoised":
            return edm_loss(self.denoise, x0, cond or {}, num_video_frames, sigma=sigma, noise=noise,
                            image_only_indicator=image_only_indicator, weight=self.scaling.loss_weight)
        t = num_video_frames
        b = x0.shape[0] // t
        sigma = sigma.to(x0.device, torch.float32).repeat_interleave(t)          # (B,) -> (B*T,)
        s = append_dims(sigma, x0.ndim)
        x0 = x0.float()
        f, _, _ = self._predict(x0 + noise * s, sigma, cond, t, image_only_indicator)
        return ((f.float() - self.scaling.target(x0, noise, s)) ** 2).reshape(b, -1).mean(dim=1)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: dict | None = None,
                num_video_frames: int = 1, image_only_indicator: torch.Tensor | None = None, *,
                noise_sigma: torch.Tensor | float | None = None,
                loss_noise: torch.Tensor | None = None) -> torch.Tensor:
        """D(x; sigma); with `loss_noise`, x is x0, sigma is per video and the result is
        `loss(x, loss_noise, sigma, ...)`: a training engine (DeepSpeed) runs its hooks only
        around `forward`, so training asks for the loss this way."""
        if loss_noise is not None:
            return self.loss(x, loss_noise, sigma, cond, num_video_frames, image_only_indicator)
        return self.denoise(x, sigma, cond, num_video_frames, image_only_indicator, noise_sigma=noise_sigma)


class KeywordDenoiser(Denoiser):
    """`Denoiser` for a network called as `net(c_in x, c_noise, **cond)` (`precondition`)."""

    def network(self, x_in, c_noise, cond, num_video_frames, image_only_indicator):
        return self.net(x_in, c_noise, **cond)


def precondition(net: Callable[..., torch.Tensor], scaling: Scaling) -> Callable[..., torch.Tensor]:
    """D(x, sigma, *, noise_sigma=None, **cond) for a network called as `net(x, time_label, **cond)`
    (diffusers-style U-Nets, pixel U-Nets, test functions): the `Denoiser` with that call."""
    module = KeywordDenoiser(net, scaling)

    def denoiser(x: torch.Tensor, sigma: torch.Tensor | float, *, noise_sigma: torch.Tensor | None = None,
                 **cond) -> torch.Tensor:
        return module(x, sigma, cond, noise_sigma=noise_sigma)

    return denoiser


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
    x_noisy = x0 + noise * append_dims(sigma, x0.ndim)
    denoised = denoiser(x_noisy, sigma, cond, t, image_only_indicator)
    per_frame = (weight(append_dims(sigma, x0.ndim)) * (denoised.float() - x0.float()) ** 2)
    return per_frame.reshape(b, -1).mean(dim=1)                              # (B,)
