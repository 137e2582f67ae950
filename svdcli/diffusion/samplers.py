"""EDM samplers as pure functions, k-diffusion style.

Every sampler has the signature `sample_x(denoiser, x, sigmas, *, extra_args, callback)`:
`denoiser(x, sigma, **extra_args)` returns D(x; sigma), `x` is already at noise level
`sigmas[0]` (see `prior_sample`), and `sigmas` ends with 0. Samplers draw no random numbers
and do no I/O; a progress bar is the caller's `callback`.

Noise is drawn per sample from its own seed (`per_sample_noise`), so a video does not change
when it is generated in a bigger batch or on another device.
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


def _sigma_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar sigma to one value per batch row, as the denoiser expects."""
    return x.new_ones([x.shape[0]]) * sigma


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 extra_args: dict | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Deterministic Euler steps of the probability-flow ODE (EDM, Karras et al. 2022, Alg. 1 without the Heun correction)."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        sigma = _sigma_batch(x, sigmas[i])
        denoised = denoiser(x, sigma, **extra_args)
        d = to_d(x, sigma, denoised)
        dt = append_dims(_sigma_batch(x, sigmas[i + 1]) - sigma, x.ndim)
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
        sigma = _sigma_batch(x, sigmas[i])
        sigma_next = _sigma_batch(x, sigmas[i + 1])
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


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample_euler, "heun": sample_heun}

