"""The patch-wise temporal discriminator of the decoder finetune (Blattmann et al. 2023,
Sec. 3.1.1 and Fig. 3) and the adversarial terms it takes part in.

The paper says only "a (patch-wise) temporal discriminator built from 3D convolutions". Here it
is the PatchGAN of the LDM autoencoders (taming-transformers' `NLayerDiscriminator`) with every
2-D convolution made 3-D: kernels (3, 4, 4), stride 2 in space and 1 in time, so each output
logit judges one space-time patch (three layers: 11 frames by 70x70 pixels). GroupNorm replaces
its BatchNorm, so the logits of one video do not depend on the other videos of a batch (or on
how a batch is split over GPUs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


class TemporalPatchDiscriminator(nn.Module):
    """Video (B, 3, T, H, W) in [-1, 1] -> logits (B, 1, T, H', W'), one per space-time patch."""

    def __init__(self, channels: int = 64, layers: int = 3, in_channels: int = 3):
        super().__init__()
        k, p = (3, 4, 4), (1, 1, 1)
        seq: list[nn.Module] = [nn.Conv3d(in_channels, channels, k, (1, 2, 2), p), nn.LeakyReLU(0.2)]
        width = channels
        for n in range(1, layers + 1):
            out = channels * min(2 ** n, 8)
            stride = (1, 2, 2) if n < layers else (1, 1, 1)
            seq += [nn.Conv3d(width, out, k, stride, p, bias=False), _norm(out), nn.LeakyReLU(0.2)]
            width = out
        seq.append(nn.Conv3d(width, 1, k, 1, p))
        self.main = nn.Sequential(*seq)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.main(video)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """L_D = 1/2 (E[relu(1 - D(x))] + E[relu(1 + D(x_hat))]) (Lim & Ye 2017; taming's `hinge_d_loss`)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def discriminator_accuracy(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Fraction of patches judged right: real ones > 0, reconstructed ones < 0."""
    return 0.5 * ((logits_real > 0).float().mean() + (logits_fake < 0).float().mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """lambda = ||grad_L L_rec|| / (||grad_L L_G|| + 1e-4) at the decoder's last layer L
    (Esser et al. 2021, eq. 7), clamped to [0, max_weight] and not differentiated."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


def frozen_call(module: nn.Module, *args):
    """`module(*args)` with its parameters detached: gradients reach the inputs only (the
    generator's adversarial term must not train the discriminator)."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, args)
