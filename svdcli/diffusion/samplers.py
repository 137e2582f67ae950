"""Samplers as pure functions, k-diffusion style.

Every sampler has the signature `sample_x(denoiser, x, sigmas, *, extra_args, callback)`:
`denoiser(x, sigma, **extra_args)` returns D(x; sigma), `x` is already at noise level
`sigmas[0]` (see `prior_sample`), and `sigmas` ends with 0 (or with a VP schedule's last
level, see `schedules.DiscreteVPSchedule.ddim_sigmas`). A progress bar is the caller's
`callback`; nothing here does I/O.

Euler and Heun are deterministic. The stochastic ones (`sample_ancestral` here, DDIM with
eta > 0 in `ddim.py`) take a `generator`: one torch.Generator, or one per sample so that a
sample's noise does not depend on what is sampled beside it (`step_noise`). Initial noise
is drawn per sample from its own seed (`per_sample_noise`), so a video does not change when
it is generated in a bigger batch or on another device.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

Denoiser = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton axes to `x` until it has `ndim` dimensions."""
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """Probability-flow ODE slope dx/dsigma = (x - D(x; sigma)) / sigma (EDM, Karras et al. 2022, eq. 3)."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def per_sample_noise(seeds: Sequence[int], shape: Sequence[int], *, frames: int = 1,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, I) noise of shape (len(seeds) * frames, *shape), each sample from its own seed.

    Drawn on the CPU in float32 and then moved, so the same seed gives the same video on any
    device, in any dtype and at any batch size. Rows are video-major: row b*frames + t.
    """
    chunks = []
    for seed in seeds:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        chunks.append(torch.randn((frames, *shape), generator=gen, dtype=torch.float32))
    return torch.cat(chunks).to(device=device, dtype=dtype)  # (B*T, *shape)


def prior_sample(noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_0 = n * sqrt(1 + sigma_0^2): the EDM prior for sigma_data = 1 (what SVD's sampler does)."""
    return noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)


def sigma_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar sigma to one value per batch row, as the denoiser expects."""
    return x.new_ones([x.shape[0]]) * sigma


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 extra_args: dict | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Deterministic Euler steps of the probability-flow ODE (EDM, Karras et al. 2022, Alg. 1 without the Heun correction)."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        sigma = sigma_batch(x, sigmas[i])
        denoised = denoiser(x, sigma, **extra_args)
        d = to_d(x, sigma, denoised)
        dt = append_dims(sigma_batch(x, sigmas[i + 1]) - sigma, x.ndim)
        x = x + dt * d
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1], "denoised": denoised})
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                extra_args: dict | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Heun's second-order method, Euler on the last step to sigma = 0 (EDM, Karras et al. 2022, Alg. 1)."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        sigma = sigma_batch(x, sigmas[i])
        sigma_next = sigma_batch(x, sigmas[i + 1])
        denoised = denoiser(x, sigma, **extra_args)
        d = to_d(x, sigma, denoised)
        dt = append_dims(sigma_next - sigma, x.ndim)
        x_euler = x + dt * d
        if float(sigmas[i + 1]) > 0:
            # trapezoidal correction: average the slopes at both ends of the step
            d_next = to_d(x_euler, sigma_next, denoiser(x_euler, sigma_next, **extra_args))
            x = x + dt * (d + d_next) / 2.0
        else:
            x = x_euler
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_next": sigmas[i + 1], "denoised": denoised})
    return x


def step_noise(x: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None
               ) -> torch.Tensor:
    """N(0, I) like x, drawn on each generator's device in x's dtype, then moved to x.

    One generator draws the whole batch at once (what diffusers' `randn_tensor` does); a list
    of k generators splits the rows into k equal consecutive groups (samples, or the frames of
    one video each), group i drawn from generator i.
    """
    if generator is None:
        return torch.randn_like(x)
    if isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
    if x.shape[0] % len(generator):
        raise ValueError(f"{x.shape[0]} rows do not split into {len(generator)} equal groups, one per generator")
    rows = x.shape[0] // len(generator)
    parts = [torch.randn((rows, *x.shape[1:]), generator=g, device=g.device, dtype=x.dtype).to(x.device)
             for g in generator]
    return torch.cat(parts)


@torch.no_grad()
def sample_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, gamma: float = 0.0,
                     extra_args: dict | None = None, callback: Callback | None = None,
                     generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
    """Ancestral sampling from q(z_s | z_t, x = D) (Ho et al. 2020, eq. 6-7; VDM, Ho et al. 2022, sec. 2).

    With r = SNR(t) / SNR(s) = sigma_s^2 / sigma_t^2 the VP posterior of VDM,
    mean = r alpha_s / alpha_t z_t + (1 - r) alpha_s x and variance
    (sigma~^2_{s|t})^(1 - gamma) (sigma^2_{t|s})^gamma with sigma~^2_{s|t} = (1 - r) s_s^2 and
    sigma^2_{t|s} = (1 - r) s_t^2 (s = VP noise std), reads in the sigma parametrisation
    (divide by alpha_s): mean = r x_t + (1 - r) D, posterior variance (1 - r) sigma_s^2 and
    forward variance (1 - r) sigma_t^2 (1 + sigma_s^2) / (1 + sigma_t^2). gamma = 0 is DDPM's
    "fixed_small" variance (= DDIM with eta = 1), gamma = 1 its "fixed_large" beta_t. The
    step to sigma = 0 returns D and draws nothing, like DDPM's step from t = 0.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma interpolates two variances and must be in [0, 1], got {gamma}")
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma_batch(x, s), **extra_args)
        if float(s_next) == 0:
            x = denoised
        else:
            r = s_next**2 / s**2
            var_small = (1 - r) * s_next**2
            var_large = (1 - r) * s**2 * (1 + s_next**2) / (1 + s**2)
            std = (var_small ** (1 - gamma) * var_large**gamma).sqrt()
            x = r * x + (1 - r) * denoised + std * step_noise(x, generator)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample_euler, "heun": sample_heun}

