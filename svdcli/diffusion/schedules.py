"""Noise-level discretizations for sampling (k-diffusion style `get_sigmas_*` functions)."""
from __future__ import annotations

import torch


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
