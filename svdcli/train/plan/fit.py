"""The cheapest change that makes a run fit its GPUs, among the ones that train the same model.

Changes are tried in order of what they cost (`CHANGES`, cheapest first), added one by one
until the plan fits; then every change the fit does not need is dropped again, most costly
first. None of them changes what is learned: the same network, trainable set, frames, size and
global batch (fewer frames, a lower resolution, temporal-only or LoRA training would; the
message names them when nothing else fits).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

from svdcli.train.plan.plan import Plan, Target, make_plan


@dataclass(frozen=True)
class Change:
    name: str
    how: str                                   # the flag or key that makes it, for the user
    cost: str                                  # what it costs
    applies: Callable[[object, dict, Target], bool]
    apply: Callable[[object, dict], tuple[object, dict]]


def _set(cfg, **values):
    """A copy of the TrainConfig `cfg` with dotted keys set, validated again."""
    from svdcli.train.config import config_from_dict

    return config_from_dict(cfg.to_dict(), [f"{k.replace('__', '.')}={v}" for k, v in values.items()])


def _zero(ds: dict, stage: int, **extra) -> dict:
    ds = copy.deepcopy(ds)
    z = ds.setdefault("zero_optimization", {})
    z["stage"] = stage
    z.update(extra)
    return ds


def _zero_of(ds: dict) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))


def _offloaded(ds: dict) -> bool:
    return (ds.get("zero_optimization", {}).get("offload_optimizer") or {}).get("device", "none") != "none"


def _has_vae(cfg) -> bool:
    """Whether the family trains in a VAE's latent space (so stored latents can replace its encoder)."""
    import torch

    from svdcli.train.config import family_of

    family = family_of(cfg)
    with torch.device("meta"):
        return family.training_vae(family.encoders(cfg, "meta")) is not None


CHANGES = (
    Change("activation checkpointing", "--set activation_checkpointing=true",
           "about a third more compute per step (every UNet block runs its forward twice)",
           lambda cfg, ds, t: not cfg.activation_checkpointing,
           lambda cfg, ds: (_set(cfg, activation_checkpointing="true"), ds)),
    Change("ZeRO-2", "--deepspeed pipelines/deepspeed/zero2.json",
           "gradients reduce-scattered instead of all-reduced: about the same traffic",
           lambda cfg, ds, t: t.gpus > 1 and _zero_of(ds) < 2,
           lambda cfg, ds: (cfg, _zero(ds, 2, overlap_comm=True, contiguous_gradients=True,
                                       reduce_bucket_size=200_000_000, allgather_bucket_size=200_000_000))),
    Change("stored latents", "--set data.latents=true",
           "pack the shards once more with `svd pack --latents VAE` (the VAE encoder then stays idle)",
           lambda cfg, ds, t: not cfg.data.latents and _has_vae(cfg),
           lambda cfg, ds: (_set(cfg, data__latents="true"), ds)),
    Change("ZeRO-3", "--deepspeed pipelines/deepspeed/zero3.json",
           "weights gathered layer by layer in every forward and backward: ~1.5x the traffic of ZeRO-2",
           lambda cfg, ds, t: t.gpus > 1 and _zero_of(ds) < 3,
           lambda cfg, ds: (cfg, _zero(ds, 3, overlap_comm=True, contiguous_gradients=True,
                                       reduce_bucket_size=50_000_000, stage3_prefetch_bucket_size=50_000_000,
                                       stage3_param_persistence_threshold=100_000))),
    Change("8-bit AdamW", "--set optim.name=adamw8bit",
           "optimizer states quantised blockwise (bitsandbytes: pip install 'svdcli[lowmem]')",
           lambda cfg, ds, t: cfg.optim.name == "adamw",
           lambda cfg, ds: (_set(cfg, optim__name="adamw8bit"), ds)),
    Change("optimizer in CPU memory", "--deepspeed pipelines/deepspeed/zero2_offload.json",
           "the update runs on the CPU (host memory and PCIe traffic; slower steps)",
           lambda cfg, ds, t: not _offloaded(ds) and _zero_of(ds) <= 2,
           lambda cfg, ds: (cfg, _zero(ds, 2, offload_optimizer={"device": "cpu", "pin_memory": True},
                                       overlap_comm=True, contiguous_gradients=True,
                                       reduce_bucket_size=200_000_000, allgather_bucket_size=200_000_000))),
    Change("smaller micro-batches", "--set data.batch_size=B/2 --set data.grad_accum=2A",
           "the same global batch in more, smaller forward passes (lower throughput)",
           lambda cfg, ds, t: cfg.data.batch_size > 1,
           lambda cfg, ds: (_set(cfg, data__batch_size=cfg.data.batch_size // 2,
                                 data__grad_accum=cfg.data.grad_accum * 2), ds)),
)


@dataclass
class Fit:
    """The changes a run needs, what they give, and the plan with them."""

    changes: list[Change]
    plan: Plan
    cfg: object
    ds_config: dict

    def flags(self) -> str:
        cfg = self.cfg
        out = []
        for c in self.changes:
            how = c.how
            if c.name == "smaller micro-batches":
                how = f"--set data.batch_size={cfg.data.batch_size} --set data.grad_accum={cfg.data.grad_accum}"
            if how not in out:
                out.append(how)
        return " ".join(out)


def cheapest_fit(cfg, ds_config: dict, target: Target, device: str = "cuda") -> Fit | None:
    """The cheapest set of `CHANGES` under which `cfg` fits `target`, or None."""
    tried: list[Change] = []
    cur_cfg, cur_ds = cfg, ds_config
    plan = make_plan(cur_cfg, cur_ds, target.gpus, device)
    while not plan.fits(target):
        step = next((c for c in CHANGES if _applied(c, cur_cfg, cur_ds, target)), None)
        if step is None:
            return None
        cur_cfg, cur_ds = _applied(step, cur_cfg, cur_ds, target)
        tried.append(step)
        plan = make_plan(cur_cfg, cur_ds, target.gpus, device)
    return _prune(cfg, ds_config, tried, target, device, Fit(tried, plan, cur_cfg, cur_ds))


def _applied(change: Change, cfg, ds: dict, target: Target):
    """(cfg, ds) with `change` made, or None where it does not apply (or the family refuses it)."""
    from svdcli.typed_config import ConfigError

    if not change.applies(cfg, ds, target):
        return None
    try:
        return change.apply(cfg, ds)
    except ConfigError:
        return None


def _prune(cfg, ds_config, changes: list[Change], target: Target, device: str, best: Fit) -> Fit:
    """Drop each change, most costly first, where the rest still fit."""
    keep = list(changes)
    for c in sorted(set(changes), key=CHANGES.index, reverse=True):
        trial = [x for x in keep if x is not c]
        if len(trial) == len(keep):
            continue
        cur_cfg, cur_ds = cfg, ds_config
        for x in trial:
            changed = _applied(x, cur_cfg, cur_ds, target)
            if changed is None:
                break
            cur_cfg, cur_ds = changed
        else:
            plan = make_plan(cur_cfg, cur_ds, target.gpus, device)
            if plan.fits(target):
                keep, best = trial, Fit(trial, plan, cur_cfg, cur_ds)
    return best
