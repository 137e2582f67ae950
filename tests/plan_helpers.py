"""Measured memory of a real training step on the CPU, to check the planner against.

`measured_peak` builds what `svd train` builds (the family's encoders and denoiser, the
DeepSpeed engine with `svdcli.train.engine`, the EMA) and runs two optimizer steps under torch's
profiler with memory profiling on: it records every allocation and release of torch's CPU
allocator with its size and time. The running sum over the whole run is the bytes held; the
answer is its maximum during the second step, when optimizer states and DeepSpeed's buffers
already exist (the steady state a plan describes). Allocations outside torch's allocator
(oneDNN scratch space, Python objects) are not counted, as the plan does not count them.
"""
from __future__ import annotations

import gc
import json
import os

import torch

TINY_DS = {"zero_optimization": {"reduce_bucket_size": 500_000, "allgather_bucket_size": 500_000,
                                 "stage3_prefetch_bucket_size": 500_000, "stage3_param_persistence_threshold": 10_000}}


def tiny_config(**values):
    """A tiny-model TrainConfig; keys like `data__frames=4` set nested values."""
    from svdcli.train.config import config_from_dict

    base = {"model": "tiny", "stage": "video", "precision": "fp32", "activation_checkpointing": False,
            "data": {"height": 64, "width": 64, "frames": 4, "batch_size": 2}}
    overrides = [f"{k.replace('__', '.')}={v}" for k, v in values.items()]
    return config_from_dict(base, overrides)


def ds_config(cfg, zero: int, tmp_path, **extra) -> dict:
    """The DeepSpeed dict `svd train` would run: small buckets (the shipped 2e8-element ones
    would be most of a tiny model's memory), the given stage, read through load_ds_config."""
    from svdcli.train.engine import load_ds_config

    ds = json.loads(json.dumps(TINY_DS))
    ds["zero_optimization"].update(stage=zero, **extra)
    path = tmp_path / f"zero{zero}.json"
    path.write_text(json.dumps(ds))
    return load_ds_config(path, cfg, 1)


def _step(engine, encoders, family, cfg, seed: int) -> None:
    """One optimizer step as svdcli.train.loop runs it, its phases marked for the profiler."""
    from torch.profiler import record_function

    from svdcli.train.plan.trace import synthetic_batch

    gen = torch.Generator().manual_seed(seed)
    video, meta = synthetic_batch(cfg, device="cpu")
    video.uniform_(-1, 1)
    if "latents" in meta:
        meta["latents"].normal_()
    for _ in range(cfg.data.grad_accum):
        with record_function("prepare"):
            batch = family.prepare(video, meta, encoders, cfg, gen, "cpu")
        sigma = family.training_sigmas(cfg.data.batch_size, cfg, gen)
        noise = torch.randn(batch.x0.shape, generator=gen)
        with record_function("step"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
                loss = family.loss(engine, batch, sigma, noise).mean()
            engine.backward(loss)
        with record_function("update"):
            engine.step()


def measured_peak(cfg, ds: dict) -> dict[str, int]:
    """Bytes held by torch's CPU allocator during the second optimizer step (see the module doc):
    its peak, the peak of each phase (prepare, step = forward + backward, update) and what was
    held when it began."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from svdcli.train.config import family_of
    from svdcli.train.ema import EMA
    from svdcli.train.engine import build_engine, init_distributed, setup_env

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    init_distributed(setup_env())
    family = family_of(cfg)
    zero3 = ds["zero_optimization"]["stage"] == 3
    gc.collect()    # an earlier engine's reference cycles released during the profile would count as negative
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        encoders = family.encoders(cfg, "cpu")
        engine, _, _ = build_engine(family.build(cfg), cfg, ds)
        ema = EMA(engine.module, cfg.ema.decay, zero3=zero3) if cfg.ema.enabled else None
        for seed in (1, 2):
            with record_function(f"step{seed}"):
                _step(engine, encoders, family, cfg, seed)
                if ema is not None:
                    ema.update()
    events = prof.profiler.kineto_results.events()
    start, end = next((e.start_ns(), e.end_ns()) for e in events if e.name() == "step2")
    ranges = [(e.name(), e.start_ns(), e.end_ns()) for e in events
              if e.name() in ("prepare", "step", "update") and start <= e.start_ns() <= end]
    memory = sorted((e.start_ns(), e.nbytes()) for e in events
                    if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU)
    out = {"peak": 0, "before": None, "prepare": 0, "step": 0, "update": 0}
    held = 0
    for t, n in memory:
        if out["before"] is None and t >= start:
            out["before"] = held
        held += n
        if start <= t <= end:
            out["peak"] = max(out["peak"], held)
            for name, a, b in ranges:
                if a <= t <= b:
                    out[name] = max(out[name], held)
    return out
