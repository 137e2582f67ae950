"""Conditional sampling from an unconditional VDM (Ho et al. 2022, sec. 3.1): pure functions.

A joint window x = (x^a, x^b) is sampled with the ancestral sampler (`step_ancestral`, the step
of `sample_ancestral` with gamma = 0) while an observation y of the sample must hold: y = x^a
for extension (the known frames), y = the low-resolution video for super-resolution (A =
average pooling).

- reconstruction guidance, eq. 7: x~^b(z_t) = x_hat^b(z_t) - (w_r alpha_t / 2) grad_{z^b_t} ||y - A(x_hat(z_t))||^2.
  With z_t = alpha_t x (x the samplers' sigma-space sample) the gradient is
  grad_{z_t} = grad_x / alpha_t, so x~ = x_hat - (w_r / 2) grad_x ||y - A(x_hat)||^2. For
  extension z^a is sampled from q(z_t^a | x^a) before each step, as in the replacement method,
  and only x^b is corrected (eq. 7 as written), so w_r = 0 is exactly the replacement method;
  for super-resolution nothing is known pixel by pixel, the whole prediction is corrected, and
  w_r = 0 is exactly unconditional sampling.
- replacement (the baseline of sec. 3.1): before every step the known part of x is replaced by
  a sample of q(z_t^a | x^a), i.e. x^a + sigma_t eps, and the model fills in x^b unguided.

`callback` receives, per step, the step's `reconstruction_error`, mean (y - A(x_hat))^2 of
the unguided prediction: how well the joint state explains the observation.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from svdcli.diffusion.samplers import step_ancestral, step_noise

METHODS = ("reconstruction", "replacement")


def known_frames(known: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A(x) for extension: the rows (frames) of x flagged in `known` (N,) bool."""
    return lambda x: x[known]


def downsampled(factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A(x) for super-resolution: factor x factor average pooling of every frame."""
    return lambda x: F.avg_pool2d(x, factor)


def sample_guided(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, y: torch.Tensor,
                  observe: Callable[[torch.Tensor], torch.Tensor], *, w_r: float, known: torch.Tensor | None = None,
                  generator=None, callback: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling with reconstruction guidance (Ho et al. 2022, eq. 7) toward A(x) = y.

    With `known` (N,) bool (extension, y = x^a) the known rows are also replaced by
    q(z_t^a | x^a) before each step and only x^b is corrected, as eq. 7 reads; without it
    (super-resolution) the whole prediction is corrected and w_r = 0 is unconditional sampling.
    """
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        if known is not None:
            x = x.clone()
            x[known] = y + s * step_noise(y, generator)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            denoised = denoiser(xg, s.expand(x.shape[0]))
            error = ((y - observe(denoised)) ** 2).sum()
            (grad,) = torch.autograd.grad(error, xg)
        if known is not None:
            grad[known] = 0.0                       # grad_{z^b}: x^a comes from q(z^a | x^a)
        guided = denoised.detach() - (w_r / 2.0) * grad
        x = step_ancestral(x, guided, s, s_next, generator=generator)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": guided,
                      "reconstruction_error": float(error.detach()) / y.numel()})
    if known is not None:
        x[known] = y
    return x


@torch.no_grad()
def sample_replacement(denoiser: Callable, x: torch.Tensor, sigmas: torch.Tensor, x_a: torch.Tensor,
                       known: torch.Tensor, *, generator=None, callback: Callable | None = None) -> torch.Tensor:
    """Ancestral sampling with the known frames replaced by q(z_t^a | x^a) before each step."""
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        x = x.clone()
        x[known] = x_a + s * step_noise(x_a, generator)
        denoised = denoiser(x, s.expand(x.shape[0]))
        x = step_ancestral(x, denoised, s, s_next, generator=generator)
        if callback is not None:
            callback({"i": i, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised,
                      "reconstruction_error": float(((x_a - denoised[known]) ** 2).mean())})
    x[known] = x_a
    return x
