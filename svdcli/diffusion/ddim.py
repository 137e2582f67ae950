"""DDIM sampling and DDIM inversion over a denoiser D, in the sigma parametrisation.

Design choice: DDIM runs on the denoiser's x0_hat = D(x, sigma) with x = x0 + sigma eps, not on
a network's raw eps / v output as diffusers' `DDIMScheduler` does. The maps are the same: the
DDIM step (Song et al. 2021, eq. 12) from alpha_bar_t to alpha_bar_s in VP terms,

    z_s = sqrt(a_s) x0_hat + sqrt(1 - a_s - std^2) eps_hat + std z,
    std^2 = eta^2 (1 - a_s) / (1 - a_t) (1 - a_t / a_s)                      (eq. 16)

divided by sqrt(a_s) (x = z / sqrt(a), sigma^2 = (1 - a) / a) is

    x_s = x0_hat + sqrt(sigma_s^2 - sigma_up^2) eps_hat + sigma_up z,
    sigma_up^2 = eta^2 sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2,  eps_hat = (x_t - x0_hat) / sigma_t,

and `scalings.EpsScaling` / `VScaling` turn eps or v into x0_hat exactly as diffusers'
`prediction_type` does. Working on D keeps one seam for every family: the same function samples
an eps network, a v network (SD 2.1) or an EDM network, and guidance combines D values (D is
affine in the network output with the same factors for both branches, so CFG on D is CFG on
eps or v). eta = 0 is the Euler step of the probability-flow ODE (`samplers.sample_euler` over
the same sigmas); eta = 1 is DDPM's posterior (`samplers.sample_ancestral`, gamma = 0).

To reproduce a diffusers run: sigmas = `DiscreteVPSchedule.ddim_sigmas(...)`, start from
`scalings.from_vp(z_T, sigmas[0])` (or `samplers.prior_sample`), and `scalings.to_vp(x,
sigmas[-1])` is diffusers' final latent. Clipping / thresholding of x0 are not implemented (SD's
configs turn them off).
"""
from __future__ import annotations

import torch

from svdcli.diffusion.samplers import Callback, Denoiser, Generators, sample_ancestral, sigma_batch


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, eta: float = 0.0,
                extra_args: dict | None = None, callback: Callback | None = None,
                generator: Generators = None) -> torch.Tensor:
    """DDIM with stochasticity eta (Song et al. 2021, eq. 12 and 16) over descending sigmas: the
    ancestral sampler's loop and step (`samplers.step_ancestral`) at this eta.

    With eta > 0 one N(0, I) draw per step from `generator` (after the denoiser call, every step
    to a positive level, as diffusers' `DDIMScheduler.step`), so the same generator gives
    diffusers' samples.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"DDIM's eta must be in [0, 1], got {eta}")
    return sample_ancestral(denoiser, x, sigmas, eta=eta, extra_args=extra_args, callback=callback,
                            generator=generator)


@torch.no_grad()
def invert_ddim(denoiser: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, *, label: str = "target",
                extra_args: dict | None = None, callback: Callback | None = None) -> torch.Tensor:
    """DDIM inversion (Song et al. 2021, sec. 4.3): deterministic DDIM steps with ascending sigmas.

    `sigmas` ascends from the clean sample's level (> 0; alpha_bar_0 for SD) to the level the
    sampler starts at: `ddim_sigmas(...).flip(0)` inverts exactly the grid `sample_ddim` walks.
    Each step is x_next = x0_hat + sigma_next eps_hat with both estimated at the current level.

    `label` is the time label the network sees. "target" (the default) labels each step with
    the level it steps to, as diffusers' pipelines feed `DDIMInverseScheduler` and as
    Tune-A-Video's `ddim_inversion` does: the denoiser is then called with
    `noise_sigma=sigma_next` and must accept it (`edm.Denoiser`, `edm.precondition` do).
    "current" labels it with the current level: the plain Euler step of the probability-flow
    ODE, i.e. `sample_euler` over the ascending sigmas.
    """
    if label not in ("target", "current"):
        raise ValueError(f"label must be 'target' or 'current', not {label!r}")
    if not float(sigmas[0]) > 0:
        raise ValueError("DDIM inversion must start at a positive noise level: at sigma = 0 the "
                         "denoiser does not determine eps (use alpha_bar_0, set_alpha_to_one=False)")
    if not bool((sigmas[1:] >= sigmas[:-1]).all()):
        raise ValueError("DDIM inversion needs ascending sigmas")
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        relabel = {"noise_sigma": sigma_batch(x, s_next)} if label == "target" else {}
        denoised = denoiser(x, sigma_batch(x, s), **relabel, **extra_args)
        x = denoised + s_next * (x - denoised) / s
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})
    return x
