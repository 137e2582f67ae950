"""The validation curve: the training loss on held-out shards at fixed noise levels, logged with it.

Training losses are noisy (every step draws its own noise levels and noise), so a curve that
can show overfitting or a regression measures the same thing every time: the first
`validation.batches` batches of `validation.data` (shards `svd pack` wrote from clips kept out
of training), read once in a fixed order, each evaluated at `validation.levels` noise levels
with noise drawn from (validation.seed, batch, level), through the family's own batch
preparation and loss. The levels are quantiles of the family's own training noise distribution
(evenly spaced in probability, from 4096 draws of a fixed generator), so the curve weights noise
levels as training does and means the same in every family; `validation.sigmas` gives explicit
levels instead. Logged as `val_loss` (the mean) and `val_loss_by_sigma` in log.jsonl and
TensorBoard every `validation.every` steps and at the end. The weights are the live (not the
EMA) ones; every rank computes the same batches (ZeRO-3 needs each rank in each forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ValidationConfig:
    data: str = ""                     # held-out shard folder (`svd pack`); empty: no validation
    every: int = 500                   # optimizer steps between evaluations
    batches: int = 4                   # held-out batches (of data.batch_size) per evaluation
    levels: int = 6                    # noise levels: quantiles of the training distribution
    sigmas: tuple[float, ...] = ()     # explicit levels instead (EDM sigmas)
    seed: int = 0


def check(cfg) -> None:
    """Refuse settings that would fail mid-run (called by the training config's validation)."""
    from svdcli.typed_config import check as require

    v = cfg.validation
    require(v.every >= 1 and v.batches >= 1 and v.levels >= 1, "validation.every, batches and levels must be >= 1")
    require(all(s >= 0 for s in v.sigmas), "validation.sigmas must be >= 0")


def noise_levels(family, cfg) -> torch.Tensor:
    """The fixed levels: explicit sigmas, else quantiles of family.training_sigmas."""
    v = cfg.validation
    if v.sigmas:
        return torch.tensor(sorted(v.sigmas), dtype=torch.float32)
    draws = family.training_sigmas(4096, cfg, torch.Generator().manual_seed(v.seed)).float()
    q = (torch.arange(v.levels, dtype=torch.float64) + 0.5) / v.levels
    return torch.quantile(draws.double(), q).float()


class Validator:
    """Held-out batches read once, evaluated at fixed levels (module docstring)."""

    def __init__(self, cfg, family, encoders, device: str, urls: list[str]):
        """`urls`: the readable shards of validation.data (svdcli.train.data.check_shards)."""
        from svdcli.errors import SvdError
        from svdcli.shards.loader import make_loader

        v, d = cfg.validation, cfg.data
        loader = make_loader(urls, batch_size=d.batch_size, num_frames=cfg.frames, size=(d.height, d.width),
                             num_workers=0, shuffle=0, seed=v.seed, rank=0, world_size=1, latents=d.latents)
        self.batches = []
        for video, meta in loader:
            self.batches.append((video, meta))
            if len(self.batches) == v.batches:
                break
        if len(self.batches) < v.batches:
            raise SvdError(f"validation.data {v.data}: {len(self.batches)} batch(es) of {d.batch_size}, fewer than "
                           f"validation.batches {v.batches}; pack more held-out clips or lower validation.batches")
        self.cfg, self.family, self.encoders, self.device = cfg, family, encoders, device
        self.levels = noise_levels(family, cfg)

    def due(self, step: int) -> bool:
        return step % self.cfg.validation.every == 0 or step == self.cfg.steps

    @torch.no_grad()
    def run(self, denoiser, step: int) -> dict:
        """{'val_loss': mean, 'val_loss_by_sigma': {level: mean}} over the held-out batches."""
        cfg, was_training = self.cfg, denoiser.training   # a DeepSpeed engine passes eval / train on
        denoiser.eval()
        per_level = [[] for _ in self.levels]
        dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        try:
            for b, (video, meta) in enumerate(self.batches):
                gen = torch.Generator().manual_seed(int(np.random.SeedSequence([cfg.validation.seed, b]).generate_state(1)[0]))
                batch = self.family.prepare(video, meta, self.encoders, cfg, gen, self.device)
                batch.step = step
                for j, level in enumerate(self.levels):
                    sigma = torch.full((video.shape[0],), float(level))
                    noise = torch.randn(batch.x0.shape, generator=gen).to(batch.x0.device)
                    with torch.autocast(device_type, dtype=dtype, enabled=cfg.precision == "bf16"):
                        per_level[j].extend(self.family.loss(denoiser, batch, sigma, noise).float().cpu().tolist())
        finally:
            denoiser.train(was_training)
        by_level = {f"{float(level):.4g}": float(np.mean(v)) for level, v in zip(self.levels, per_level)}
        return {"val_loss": float(np.mean([x for v in per_level for x in v])), "val_loss_by_sigma": by_level}
