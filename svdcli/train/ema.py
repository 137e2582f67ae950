"""Exponential moving average of the trained weights (the finetunes use decay 0.9999).

Only trainable parameters get a shadow (fp32, on the parameters' device): frozen ones never
change, so the EMA model is the live weights with the shadows substituted
(`export_state`). EMA reads the module weights, which are bf16 under bf16 training; the shadow
itself accumulates in fp32. Under ZeRO-3 each
parameter is gathered for the update, which is correct but slow; ZeRO-1/2 keep full weights.
"""
from __future__ import annotations

import contextlib

import torch


class EMA:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta, after every optimizer step."""

    def __init__(self, module: torch.nn.Module, decay: float, zero3: bool = False, track: bool = True):
        self.decay = decay
        self.zero3 = zero3
        # track=False: no shadows, export_state gives the live weights (runs without EMA).
        self.params = {n: p for n, p in module.named_parameters() if p.requires_grad and track}
        with self._gathered():
            self.shadow = {n: p.detach().float().clone() for n, p in self.params.items()}

    def _gathered(self, params=None):
        if not self.zero3:
            return contextlib.nullcontext()
        import deepspeed

        params = list(self.params.values()) if params is None else list(params)
        return deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    @torch.no_grad()
    def update(self) -> None:
        with self._gathered():
            for name, p in self.params.items():
                self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {n: t.detach().cpu() for n, t in self.shadow.items()}

    def export_state(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The module's full state dict in fp32 with the EMA shadows in place of trained weights."""
        with self._gathered(module.parameters()):
            state = {n: t.detach().float().cpu().clone() for n, t in module.state_dict().items()}
        for n, t in self.shadow.items():
            state[n] = t.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        for n in self.shadow:
            self.shadow[n].copy_(state[n])
