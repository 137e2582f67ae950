"""Denoiser preconditioning as objects: every family's network becomes one denoiser form.

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))   (EDM eq. 7)

in the "sigma" (variance-exploding) parametrisation the samplers use: x = x0 + sigma eps.
A variance-preserving model sees z_t = alpha_t x0 + s_t eps with alpha_t^2 + s_t^2 = 1; both
describe one noisy sample when

    sigma = s_t / alpha_t,   alpha_t = 1 / sqrt(1 + sigma^2),   z_t = x / sqrt(1 + sigma^2),

so c_in = 1 / sqrt(1 + sigma^2) turns the sampler's x into the z_t a VP network was trained on
(`to_vp` / `from_vp` convert whole samples). Each scaling is a `Scaling`: `scaling(sigma)`
returns (c_skip, c_out, c_in, c_noise), as sgm's `denoiser_scaling` classes do.

- `EDMScaling(sigma_data)`: Karras et al. 2022, Table 1 (F predicts a scaled mix of x0 and eps).
- `VScalingWithEDMcNoise`: SVD's choice (sgm's class of that name): v-prediction factors with
  sigma_data = 1 and EDM's c_noise = ln(sigma) / 4. This is what `edm.Denoiser` uses by default.

The denoiser itself is `edm.Denoiser(net, scaling)`, the one place EDM eq. 7 is computed;
`edm.precondition` gives it for a network called with keywords.
- `EpsScaling(schedule)`, `VScaling(schedule)`: VP networks predicting eps or v (Salimans & Ho
  2022), conditioned on the schedule's time t(sigma) (discrete timestep index or continuous t).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol

import torch

from svdcli.diffusion.samplers import append_dims

Tensor = torch.Tensor


class TimeOfSigma(Protocol):
    """A schedule that maps a noise level to the time label its network was trained with."""

    def t(self, sigma: Tensor) -> Tensor: ...


class Scaling(ABC):
    """The four preconditioning factors of EDM eq. 7 as functions of sigma (any shape)."""

    def __call__(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.c_skip(sigma), self.c_out(sigma), self.c_in(sigma), self.c_noise(sigma)

    @abstractmethod
    def c_skip(self, sigma: Tensor) -> Tensor: ...

    @abstractmethod
    def c_out(self, sigma: Tensor) -> Tensor: ...

    @abstractmethod
    def c_in(self, sigma: Tensor) -> Tensor: ...

    @abstractmethod
    def c_noise(self, sigma: Tensor) -> Tensor: ...

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """lambda(sigma) = 1 / c_out^2: lambda ||D - x0||^2 is the squared error of the network
        output F against its own target (x0 - c_skip x) / c_out. That is the eps-MSE of an eps
        network and the v-MSE of a v network (SD's objectives), and EDM eq. 8's weighting for
        `EDMScaling` and SVD's v-scaling."""
        return 1.0 / self.c_out(sigma) ** 2

    def target(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """What F is trained to output at x = x0 + sigma noise: (x0 - c_skip x) / c_out, so that
        D = x0 exactly (k-diffusion's `Denoiser.loss`). VP scalings give it in closed form."""
        return (x0 - self.c_skip(sigma) * (x0 + noise * sigma)) / self.c_out(sigma)


@dataclass(frozen=True)
class EDMScaling(Scaling):
    """Karras et al. 2022, Table 1: the factors that give F unit-variance inputs and targets.

    c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4, with sd = sigma_data.
    Note the sign of c_out: with sd = 1 this differs from `VScalingWithEDMcNoise` (SVD) only in
    that sign, so an SVD network wrapped with `EDMScaling(1.0)` would predict -v.
    """

    sigma_data: float = 0.5

    def c_skip(self, sigma: Tensor) -> Tensor:
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: Tensor) -> Tensor:
        return sigma * self.sigma_data / (sigma**2 + self.sigma_data**2) ** 0.5

    def c_in(self, sigma: Tensor) -> Tensor:
        return 1 / (sigma**2 + self.sigma_data**2) ** 0.5

    def c_noise(self, sigma: Tensor) -> Tensor:
        return 0.25 * sigma.log()


@dataclass(frozen=True)
class EpsScaling(Scaling):
    """A VP network predicting eps: D = x - sigma F(z_t, t), so c_skip = 1, c_out = -sigma.

    Derivation: x = x0 + sigma eps, so x0 = x - sigma eps; the network reads
    z_t = x / sqrt(1 + sigma^2) (c_in) and the time label t(sigma) of `schedule` (c_noise).
    """

    schedule: TimeOfSigma = field(repr=False)

    def c_skip(self, sigma: Tensor) -> Tensor:
        return torch.ones_like(sigma)

    def c_out(self, sigma: Tensor) -> Tensor:
        return -sigma

    def c_in(self, sigma: Tensor) -> Tensor:
        return 1 / (sigma**2 + 1.0) ** 0.5

    def c_noise(self, sigma: Tensor) -> Tensor:
        return self.schedule.t(sigma)

    def target(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """eps (Ho et al. 2020, eq. 14)."""
        return noise


@dataclass(frozen=True)
class VScaling(Scaling):
    """A VP network predicting v = alpha_t eps - s_t x0 (Salimans & Ho 2022, sec. 4).

    Derivation: z_t = alpha_t x0 + s_t eps and v give x0 = alpha_t z_t - s_t v. With
    z_t = alpha_t x, alpha_t = 1 / sqrt(1 + sigma^2) and s_t = sigma / sqrt(1 + sigma^2):
    x0 = x / (1 + sigma^2) - sigma / sqrt(1 + sigma^2) v, i.e.
    c_skip = 1 / (1 + sigma^2), c_out = -sigma / sqrt(1 + sigma^2), c_in = 1 / sqrt(1 + sigma^2);
    c_noise is the time label t(sigma) of `schedule`.
    """

    schedule: TimeOfSigma = field(repr=False)

    def c_skip(self, sigma: Tensor) -> Tensor:
        return 1.0 / (sigma**2 + 1.0)

    def c_out(self, sigma: Tensor) -> Tensor:
        return -sigma / (sigma**2 + 1.0) ** 0.5

    def c_in(self, sigma: Tensor) -> Tensor:
        return 1.0 / (sigma**2 + 1.0) ** 0.5

    def c_noise(self, sigma: Tensor) -> Tensor:
        return self.schedule.t(sigma)

    def target(self, x0: Tensor, noise: Tensor, sigma: Tensor) -> Tensor:
        """v = alpha_t eps - s_t x0 with alpha_t = 1 / sqrt(1 + sigma^2), s_t = sigma / sqrt(1 + sigma^2)."""
        alpha, sigma_t = 1.0 / (1.0 + sigma**2).sqrt(), sigma / (1.0 + sigma**2).sqrt()
        return alpha * noise - sigma_t * x0


@dataclass(frozen=True)
class VScalingWithEDMcNoise(VScaling):
    """SVD: the v-prediction factors of `VScaling` (EDM Table 1 with sigma_data = 1 and the sign
    of v) and EDM's c_noise = ln(sigma) / 4 instead of a schedule's time."""

    schedule: None = field(default=None, repr=False)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return 0.25 * sigma.log()


def for_prediction(prediction: str, schedule: TimeOfSigma | None = None) -> Scaling:
    """The scaling of a network by what it predicts: "edm" (SVD's v-scaling with EDM c_noise),
    or "v" / "eps" on the VP `schedule` whose time labels it was trained with."""
    if prediction == "edm":
        return VScalingWithEDMcNoise()
    if prediction not in ("v", "eps"):
        raise ValueError(f"prediction must be edm, v or eps, not {prediction!r}")
    if schedule is None:
        raise ValueError(f"a {prediction}-prediction network needs the schedule it was trained on")
    return VScaling(schedule) if prediction == "v" else EpsScaling(schedule)


def to_vp(x: Tensor, sigma: Tensor | float) -> Tensor:
    """The sampler's x = x0 + sigma eps as the VP sample z_t = x / sqrt(1 + sigma^2)."""
    s = append_dims(torch.as_tensor(sigma, dtype=x.dtype, device=x.device), x.ndim)
    return x / (1.0 + s**2).sqrt()


def from_vp(z: Tensor, sigma: Tensor | float) -> Tensor:
    """A VP sample z_t (an SD latent, or VP noise at t = T) as x = z_t sqrt(1 + sigma^2)."""
    s = append_dims(torch.as_tensor(sigma, dtype=z.dtype, device=z.device), z.ndim)
    return z * (1.0 + s**2).sqrt()
