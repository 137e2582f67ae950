"""Random weights on every path of a model, for tests: the default init zeroes output layers
(the UNet's `out`, every ResBlock's last conv, the transformers' `proj_out`), so a fresh model
ignores most of its inputs and hides bugs that a trained one would show."""
from __future__ import annotations

import torch


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Fixture-style init: fan-in scaled weights, small biases, norms near 1, mixers in (-2.5, 2.5)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mix_factor"):
                p.copy_(torch.rand(p.shape, generator=g) * 5 - 2.5)
            elif p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
