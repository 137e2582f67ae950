"""Samplers as pure functions, k-diffusion style.

Every sampler has the signature `sample_x(denoiser, x, sigmas, *, extra_args, callback)`:
`denoiser(x, sigma, **extra_args)` returns D(x; sigma), `x` is already at noise level
`sigmas[0]` (see `prior_sample`), and `sigmas` ends with 0 (or with a VP schedule's last
level, see `schedules.DiscreteVPSchedule.ddim_sigmas`). A progress bar is the caller's
`callback`; nothing here does I/O.

Euler and Heun are deterministic unless EDM's stochastic churn is asked for (`s_churn` > 0,
Karras et al. 2022, Alg. 2). The stochastic steps (churn, `sample_ancestral` here, DDIM with
eta > 0 in `ddim.py`) take a `generator`: one torch.Generator, or one per sample so that a
sample's noise does not depend on what is sampled beside it (`step_noise`). Every ancestral
step (DDPM's posterior, DDIM's eta, VDM's guided samplers) is `step_ancestral`, whose noise
split is `get_ancestral_step`. Initial noise is drawn per sample from its own seed
(`per_sample_noise`), so a video does not change when it is generated in a bigger batch or on
another device; `step_generator` seeds the per-step noise of one stream from several keys.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

Denoiser = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None]
Generators = torch.Generator | Sequence[torch.Generator] | None   # one stream, or one per sample (`step_noise`)


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton axes to `x` until it has `ndim` dimensions: a per-row sigma
    (N,) -> (N, 1, 1, 1) to broadcast against x (N, C, H, W) (k-diffusion's `append_dims`)."""
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


def step_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from several integer keys (a seed and a step, a chunk, a rank...):
    the same keys give the same stream whenever and wherever it is drawn."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def prior_sample(noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """x_0 = n * sqrt(1 + sigma_0^2): the EDM prior for sigma_data = 1 (what SVD's sampler does)."""
    return noise * torch.sqrt(1.0 + sigmas[0] ** 2.0)


def sigma_batch(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar sigma to one value per batch row, as the denoiser expects."""
    return x.new_ones([x.shape[0]]) * sigma


def churn(x: torch.Tensor, sigma: torch.Tensor, steps: int, s_churn: float, s_tmin: float, s_tmax: float,
          s_noise: float, generator: Generators) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM's stochastic churn (Karras et al. 2022, Alg. 2, lines 4-6): within [S_tmin, S_tmax]
    raise sigma to sigma_hat = (1 + gamma) sigma, gamma = min(S_churn / N, sqrt(2) - 1), and add
    noise of std S_noise sqrt(sigma_hat^2 - sigma^2); returns (x_hat, sigma_hat). With gamma = 0
    (the default S_churn = 0) x and sigma come back untouched."""
    if s_churn <= 0 or not s_tmin <= float(sigma) <= s_tmax:
        return x, sigma
    gamma = min(s_churn / steps, math.sqrt(2.0) - 1.0)
    sigma_hat = sigma * (1.0 + gamma)
    return x + (sigma_hat**2 - sigma**2).sqrt() * s_noise * step_noise(x, generator), sigma_hat


@torch.no_grad()
def sample_euler(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                 extra_args: dict | None = None, callback: Callback | None = None, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                 generator: Generators = None) -> torch.Tensor:
    """Euler steps of the probability-flow ODE (EDM, Karras et al. 2022, Alg. 2 without the Heun
    correction): deterministic, or with churn (`s_churn` > 0, noise from `generator`)."""
    extra_args = extra_args or {}
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], steps, s_churn, s_tmin, s_tmax, s_noise, generator)
        sigma = sigma_batch(x, sigma_hat)
        denoised = denoiser(x, sigma, **extra_args)
        d = to_d(x, sigma, denoised)
        dt = append_dims(sigma_batch(x, sigmas[i + 1]) - sigma, x.ndim)
        x = x + dt * d
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_hat": sigma_hat, "sigma_next": sigmas[i + 1],
                      "denoised": denoised})
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *,
                extra_args: dict | None = None, callback: Callback | None = None, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0,
                generator: Generators = None) -> torch.Tensor:
    """Heun's second-order method, Euler on the last step to sigma = 0 (EDM, Karras et al. 2022,
    Alg. 1; Alg. 2 with churn, `s_churn` > 0)."""
    extra_args = extra_args or {}
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = churn(x, sigmas[i], steps, s_churn, s_tmin, s_tmax, s_noise, generator)
        sigma = sigma_batch(x, sigma_hat)
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
            callback({"i": i, "x": x, "sigma": sigmas[i], "sigma_hat": sigma_hat, "sigma_next": sigmas[i + 1],
                      "denoised": denoised})
    return x


def step_noise(x: torch.Tensor, generator: Generators) -> torch.Tensor:
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


def get_ancestral_step(sigma_from: torch.Tensor, sigma_to: torch.Tensor, eta: float = 1.0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_down, sigma_up) of a step from sigma_from to sigma_to that adds fresh noise of std
    sigma_up (k-diffusion's `get_ancestral_step`): DDIM's eq. 16 in the sigma parametrisation,
    sigma_up^2 = eta^2 sigma_to^2 (sigma_from^2 - sigma_to^2) / sigma_from^2 and
    sigma_down^2 = sigma_to^2 - sigma_up^2. eta = 1 is DDPM's posterior (Ho et al. 2020, eq. 7),
    eta = 0 the deterministic step.

    Written with r = sigma_to^2 / sigma_from^2 as sigma_up = eta sigma_to sqrt(1 - r) and
    sigma_down = sigma_to sqrt(1 - eta^2 + eta^2 r): sigma_to^2 - sigma_up^2 cancels to the
    last digit when sigma_to << sigma_from (VDM's first step falls from sigma = e^10).
    """
    r = (sigma_to / sigma_from) ** 2
    sigma_up = eta * sigma_to * (1 - r).sqrt()
    sigma_down = sigma_to * ((1 - eta**2) + eta**2 * r).sqrt()
    return sigma_down, sigma_up


def step_ancestral(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, *,
                   eta: float = 1.0, gamma: float = 0.0, generator: Generators = None) -> torch.Tensor:
    """x at sigma_next from x at sigma and D(x; sigma): x0_hat + sigma_down eps_hat + sigma_up z
    with eps_hat = (x - D) / sigma (DDIM, Song et al. 2021, eq. 12, divided by sqrt(alpha_bar_s)).

    `gamma` (eta = 1) widens the fresh noise from DDPM's "fixed_small" posterior variance
    sigma_up^2 toward its "fixed_large" (sigma^2 - sigma_next^2) (1 + sigma_next^2) / (1 + sigma^2),
    as (small)^(1 - gamma) (large)^gamma (VDM, Ho et al. 2022, sec. 2). The step to sigma = 0
    returns D and draws nothing, like DDPM's step from t = 0; eta = 0 draws nothing either.
    """
    if float(sigma_next) == 0:
        return denoised
    eps = (x - denoised) / sigma
    if eta == 0:
        return denoised + sigma_next * eps
    sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
    if gamma:
        large = (sigma**2 - sigma_next**2) * (1 + sigma_next**2) / (1 + sigma**2)
        sigma_up = ((sigma_up**2) ** (1 - gamma) * large**gamma).sqrt()
    return denoised + sigma_down * eps + sigma_up * step_noise(x, generator)


@torch.no_grad()
def sample_ancestral(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, gamma: float = 0.0,
                     eta: float = 1.0, extra_args: dict | None = None, callback: Callback | None = None,
                     generator: Generators = None) -> torch.Tensor:
    """Ancestral sampling from q(z_s | z_t, x = D) (Ho et al. 2020, eq. 6-7; VDM, Ho et al. 2022, sec. 2).

    With r = SNR(t) / SNR(s) = sigma_s^2 / sigma_t^2 the VP posterior of VDM,
    mean = r alpha_s / alpha_t z_t + (1 - r) alpha_s x and variance
    (sigma~^2_{s|t})^(1 - gamma) (sigma^2_{t|s})^gamma with sigma~^2_{s|t} = (1 - r) s_s^2 and
    sigma^2_{t|s} = (1 - r) s_t^2 (s = VP noise std), reads in the sigma parametrisation
    (divide by alpha_s): mean = r x_t + (1 - r) D = D + sigma_down eps_hat, posterior variance
    (1 - r) sigma_s^2 = sigma_up^2 of `get_ancestral_step` at eta = 1, forward variance
    (1 - r) sigma_t^2 (1 + sigma_s^2) / (1 + sigma_t^2). gamma = 0 is DDPM's "fixed_small"
    variance (= DDIM with eta = 1), gamma = 1 its "fixed_large" beta_t (`step_ancestral`).
    `eta` < 1 is DDIM's step (`ddim.sample_ddim`).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma interpolates two variances and must be in [0, 1], got {gamma}")
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma_batch(x, s), **extra_args)
        x = step_ancestral(x, denoised, s, s_next, eta=eta, gamma=gamma, generator=generator)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"euler": sample_euler, "heun": sample_heun}

