"""Noise-level discretizations and variance-preserving schedules, all in sigma terms.

`karras_sigmas` is EDM's sampling grid (k-diffusion's `get_sigmas_karras`). A VP schedule with
alpha_bar(t) = alpha_t^2 is the same process as x = x0 + sigma eps with

    sigma(t) = sqrt((1 - alpha_bar(t)) / alpha_bar(t)),   log-SNR lambda(t) = -2 ln sigma(t),

so each schedule here gives sigma(t), its inverse t(sigma) (the time label its network was
trained with, used as c_noise by `scalings.EpsScaling` / `VScaling`) and sampling grids that
end where the reference implementations end.

- `DiscreteVPSchedule`: DDPM-style tables over t = 0..T-1 (SD 2.1: "scaled_linear" betas from
  0.00085 to 0.012, T = 1000), with the DDIM timesteps of diffusers / ldm.
- `CosineSchedule`: continuous t in [0, 1], alpha_bar(t) = cos^2(a t + b) (Nichol & Dhariwal
  2021 in the truncated log-SNR form of Ho et al.'s VDM / Imagen code).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 700.0, rho: float = 7.0,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """EDM (Karras et al. 2022) eq. 5: sigma_i = (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho, then 0.

    Returns n+1 float32 values, descending, the last one 0. The float32 arithmetic is that of
    the official sgm `EDMDiscretization`, so the first sigma is 700.0001220703125, not 700.
    """
    if n < 1:
        raise ValueError(f"need at least one sampling step, got {n}")
    ramp = torch.linspace(0, 1, n, device=device)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _float(t: Tensor | float) -> Tensor:
    """Schedules compute in float64: tan and log near the ends lose digits in float32."""
    return torch.as_tensor(t).to(torch.float64)


@dataclass(frozen=True, eq=False)
class DiscreteVPSchedule:
    """alpha_bar_t = prod_{i <= t} (1 - beta_i) for t = 0..T-1 (Ho et al. 2020, eq. 4).

    `quantize` picks the label t(sigma) the network sees: the nearest timestep index (sgm's
    `DiscreteDenoiser`, nearest in sigma; what a network trained on integer t expects) or a
    fractional index interpolated in log sigma (k-diffusion's `DiscreteSchedule`).
    """

    alphas_cumprod: Tensor = field(repr=False)  # (T,) float64, decreasing
    quantize: bool = True

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012,
                      num_timesteps: int = 1000, quantize: bool = True) -> DiscreteVPSchedule:
        """SD's schedule: sqrt(beta) linear from sqrt(start) to sqrt(end), in float64 as ldm/sgm.

        diffusers builds the same table in float32 (differences ~1e-7 relative); pass its
        `alphas_cumprod` to the constructor to reproduce it exactly.
        """
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1.0 - betas, dim=0), quantize)

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_timesteps: int = 1000,
               quantize: bool = True) -> DiscreteVPSchedule:
        """DDPM's schedule (Ho et al. 2020, sec. 4): beta linear from 1e-4 to 0.02."""
        betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
        return cls(torch.cumprod(1.0 - betas, dim=0), quantize)

    def __post_init__(self):
        a = _float(self.alphas_cumprod).flatten()
        if a.numel() < 2 or not bool(((a > 0) & (a < 1)).all()) or not bool((a[1:] < a[:-1]).all()):
            raise ValueError("alphas_cumprod must be at least 2 values in (0, 1), strictly decreasing")
        object.__setattr__(self, "alphas_cumprod", a)

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.numel()

    @property
    def sigmas(self) -> Tensor:
        """(T,) float64 sigma of every timestep, increasing."""
        a = self.alphas_cumprod
        return ((1.0 - a) / a).sqrt()

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma(t); a fractional t interpolates log sigma between its neighbours (float64)."""
        t = _float(t).clamp(0, self.num_timesteps - 1)
        sig = self.sigmas.to(t.device)
        lo = t.floor().long()
        hi = (lo + 1).clamp(max=self.num_timesteps - 1)
        w = t - lo
        between = ((1 - w) * sig[lo].log() + w * sig[hi].log()).exp()
        return torch.where(w == 0, sig[lo], between)

    def t(self, sigma: Tensor) -> Tensor:
        """The timestep label of sigma, in sigma's dtype: nearest index, or fractional."""
        s = _float(sigma).to(sigma.device)
        table = self.sigmas.to(s.device)
        if self.quantize:
            idx = (s.reshape(-1, 1) - table).abs().argmin(dim=1)     # (numel, T) -> (numel,)
            return idx.reshape(s.shape).to(sigma.dtype)
        log_table = table.log()
        ls = s.log().clamp(log_table[0], log_table[-1])
        hi = torch.searchsorted(log_table, ls.reshape(-1)).clamp(1, self.num_timesteps - 1)
        lo = hi - 1
        w = (ls.reshape(-1) - log_table[lo]) / (log_table[hi] - log_table[lo])
        return (lo + w).reshape(s.shape).to(sigma.dtype)

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n training noise levels (float32): the sigma of t ~ U{0, ..., T-1}, as DDPM / SD train
        (Ho et al. 2020, Alg. 1)."""
        t = torch.randint(0, self.num_timesteps, (n,), generator=generator)
        return self.sigmas[t].float()

    def ddim_timesteps(self, n: int, spacing: str = "leading", steps_offset: int = 1) -> Tensor:
        """The n timesteps DDIM visits, descending, as diffusers' `DDIMScheduler.set_timesteps`.

        "leading": (0, r, 2r, ...) + steps_offset with r = T // n; SD 2.1's scheduler config
        (steps_offset 1) gives 981, 961, ..., 1 for n = 50, the `uniform` grid of ldm's DDIM.
        "trailing": round(T - i T / n) - 1, i.e. 999, 979, ..., 19 (Lin et al. 2024, table 2).
        """
        T = self.num_timesteps
        if not 1 <= n <= T:
            raise ValueError(f"DDIM needs 1 to {T} steps, got {n}")
        if spacing == "leading":
            ts = torch.arange(n, dtype=torch.int64) * (T // n) + steps_offset
        elif spacing == "trailing":
            ts = (T - torch.arange(n, dtype=torch.float64) * (T / n)).round().long().flip(0) - 1
        else:
            raise ValueError(f"timestep spacing must be 'leading' or 'trailing', not {spacing!r}")
        if ts.min() < 0 or ts.max() >= T:
            raise ValueError(f"steps_offset {steps_offset} puts DDIM timesteps outside 0..{T - 1}")
        return ts.flip(0)

    def ddim_sigmas(self, n: int, spacing: str = "leading", steps_offset: int = 1,
                    set_alpha_to_one: bool = False, dtype: torch.dtype = torch.float32) -> Tensor:
        """n + 1 descending sigmas: those of `ddim_timesteps`, then the final level.

        The final level is alpha_bar = 1 (sigma 0) with `set_alpha_to_one`, else alpha_bar_0
        (sigma ~0.029 for SD): SD's configs and ldm's DDIM end there. diffusers steps from t to
        t - T // n, which is the next timestep of this grid for "leading" spacing and for
        "trailing" when n divides T; otherwise this grid (a chain) is what is sampled.
        """
        sigmas = self.sigmas[self.ddim_timesteps(n, spacing, steps_offset)]
        final = torch.zeros(1, dtype=torch.float64) if set_alpha_to_one else self.sigmas[:1]
        return torch.cat([sigmas, final]).to(dtype)


@dataclass(frozen=True)
class CosineSchedule:
    """Continuous cosine schedule alpha_bar(t) = cos^2(a t + b), t in [0, 1].

    In log-SNR form lambda(t) = -2 ln tan(a t + b) with b = arctan(exp(-lambda_max / 2)) and
    a = arctan(exp(-lambda_min / 2)) - b, so lambda(0) = lambda_max, lambda(1) = lambda_min
    (the truncated cosine `logsnr_schedule` of Ho et al.'s VDM / Imagen code, -20..20), and
    sigma(t) = tan(a t + b). Nichol & Dhariwal 2021's cos^2(pi/2 (t + s) / (1 + s)) is the case
    a = pi / (2 (1 + s)), b = pi s / (2 (1 + s)): `CosineSchedule.nichol_dhariwal(s)`.
    The network label t(sigma) is this schedule's t in [0, 1] (not the log-SNR).
    """

    logsnr_min: float = -20.0
    logsnr_max: float = 20.0

    @classmethod
    def nichol_dhariwal(cls, s: float = 0.008) -> CosineSchedule:
        """alpha_bar(t) = cos^2(pi/2 (t + s) / (1 + s)): lambda_min = -inf (sigma(1) = inf)."""
        return cls(logsnr_min=-math.inf, logsnr_max=-2.0 * math.log(math.tan(math.pi * s / (2 * (1 + s)))))

    def __post_init__(self):
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(f"logsnr_min {self.logsnr_min} must be below logsnr_max {self.logsnr_max}")

    @property
    def b(self) -> float:
        return math.atan(math.exp(-0.5 * self.logsnr_max))

    @property
    def a(self) -> float:
        return math.atan(math.exp(-0.5 * self.logsnr_min)) - self.b

    def _angle(self, t: Tensor | float) -> Tensor:
        return self.a * _float(t) + self.b

    def log_snr(self, t: Tensor | float) -> Tensor:
        """lambda(t) = ln(alpha_bar / (1 - alpha_bar)) = -2 ln tan(a t + b) (float64)."""
        return -2.0 * self._angle(t).tan().log()

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """alpha_bar(t) = cos^2(a t + b) (float64)."""
        return self._angle(t).cos() ** 2

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma(t) = sqrt((1 - alpha_bar) / alpha_bar) = tan(a t + b) (float64)."""
        return self._angle(t).tan()

    def t(self, sigma: Tensor) -> Tensor:
        """t(sigma) = (arctan(sigma) - b) / a, in sigma's dtype."""
        return ((_float(sigma).atan() - self.b) / self.a).to(sigma.dtype)

    def sigmas(self, n: int, dtype: torch.dtype = torch.float32) -> Tensor:
        """n + 1 descending sigmas at t = 1, (n-1)/n, ..., 1/n, then 0 (the last step lands on x0_hat)."""
        if n < 1:
            raise ValueError(f"need at least one sampling step, got {n}")
        t = torch.arange(n, 0, -1, dtype=torch.float64) / n
        return torch.cat([self.sigma(t), torch.zeros(1, dtype=torch.float64)]).to(dtype)
