"""UNet forward+backward: ours vs diffusers' UNetSpatioTemporalConditionModel, same config and
weights. CPU: the tiny config. GPU (when present): the full SVD UNet, 14 frames at 320x576,
bf16 autocast, SDPA: iterations/s, peak memory, MFU.

Run: .venv/bin/python -m benchmarks.bench_unet
"""
from __future__ import annotations

import copy
import statistics
import time

import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}


def _pair(cfg, device, seed=0):
    """(ours, diffusers) with identical random weights (every path active)."""
    from diffusers import UNetSpatioTemporalConditionModel

    from svdcli.models.unet import VideoUNet
    from svdcli.families.svd.unet_diffusers import diffusers_unet_config, set_sgm_eps, unet_state_to_diffusers

    torch.manual_seed(seed)
    ours = VideoUNet(cfg)
    with torch.no_grad():
        for p in ours.parameters():
            if not p.abs().sum():              # zero-initialised output layers: give them weights
                p.normal_(std=0.02)
    kwargs = {k: v for k, v in diffusers_unet_config(cfg).items() if not k.startswith("_")}
    theirs = UNetSpatioTemporalConditionModel(**kwargs)
    theirs.load_state_dict(unet_state_to_diffusers(ours.state_dict(), cfg))
    set_sgm_eps(theirs)
    return ours.to(device).train(), theirs.to(device).train()


def _inputs(cfg, b, t, h, w, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, t, cfg.in_channels, h, w, generator=g)
    c_noise = torch.randn(b, generator=g)
    ctx = torch.randn(b, 1, cfg.context_dim, generator=g)
    ids = torch.tensor([[6.0, 127.0, 0.02]]).repeat(b, 1)
    return [v.to(device) for v in (x, c_noise, ctx, ids)]


def _steps(cfg, ours, theirs, inputs, t):
    """Closures running one forward+backward of each model on the same inputs."""
    from svdcli.models.blocks import timestep_embedding

    x, c_noise, ctx, ids = inputs
    y = torch.cat([timestep_embedding(ids[:, i], cfg.adm_in_channels // 3) for i in range(3)], 1)
    rep = lambda v: v.repeat_interleave(t, dim=0)  # noqa: E731  per video -> per frame

    def run_ours():
        ours(x.flatten(0, 1), rep(c_noise), rep(ctx), rep(y).to(x.device), t).float().square().mean().backward()

    def run_theirs():
        theirs(x, c_noise, ctx, ids).sample.float().square().mean().backward()

    return run_ours, run_theirs


def _timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def bench_cpu(repeats: int = 5) -> None:
    """One thread (steady on a shared machine) and the default thread count."""
    default = torch.get_num_threads()
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        _bench_cpu(repeats)
    torch.set_num_threads(default)


def _bench_cpu(repeats: int) -> None:
    from svdcli.models.config import UNetConfig

    cfg = UNetConfig.tiny()
    b, t, h, w = 1, 6, 16, 24
    ours, theirs = _pair(cfg, "cpu")
    run_ours, run_theirs = _steps(cfg, ours, theirs, _inputs(cfg, b, t, h, w, "cpu"), t)
    run_ours(), run_theirs()                  # warm-up
    times = {"ours": [], "diffusers": []}
    for _ in range(repeats):                  # interleaved, so load changes hit both alike
        times["ours"].append(_timed(run_ours, lambda: None))
        times["diffusers"].append(_timed(run_theirs, lambda: None))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"CPU, tiny config (2.9M params), {b}x{t} frames, latent {h}x{w}, float32, "
          f"{torch.get_num_threads()} threads, median of {repeats}:")
    print(f"  ours      {med['ours'] * 1e3:8.1f} ms / fwd+bwd")
    print(f"  diffusers {med['diffusers'] * 1e3:8.1f} ms / fwd+bwd")
    print(f"  ratio ours/diffusers: {med['ours'] / med['diffusers']:.2f} (target <= 1.0)")


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_gpu(iters: int = 10) -> None:
    from svdcli.models.config import UNetConfig

    cfg = UNetConfig.svd()
    b, t, h, w = 1, 14, 320 // 8, 576 // 8
    ours, theirs = _pair(cfg, "cuda")
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    print(f"GPU {name}: full SVD UNet, {b}x{t} frames 320x576 (latent {h}x{w}), bf16 autocast, SDPA")
    inputs = _inputs(cfg, b, t, h, w, "cuda")
    results = {}
    for label, model in (("ours", ours), ("diffusers", theirs)):
        run = dict(zip(("ours", "diffusers"), _steps(cfg, ours, theirs, inputs, t)))[label]
        other = theirs if label == "ours" else ours
        other.cpu()                            # one model on the GPU at a time
        model.cuda()
        for ckpt in (False, True):
            if label == "ours":
                model.gradient_checkpointing = ckpt
            elif ckpt:
                model.enable_gradient_checkpointing()
            step = lambda: _autocast(run)  # noqa: E731
            try:
                step()
                torch.cuda.reset_peak_memory_stats()
                sec = statistics.median(_timed(step, torch.cuda.synchronize) for _ in range(iters))
            except torch.cuda.OutOfMemoryError:
                print(f"  {label:<9} checkpointing={ckpt!s:<5} out of memory")
                model.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                results[(label, ckpt)] = float("nan")
                continue
            mem = torch.cuda.max_memory_allocated() / 2**30
            flops = _flops(step)
            mfu = f"{flops / sec / (peak * 1e12) * 100:.1f}%" if peak else "n/a"
            results[(label, ckpt)] = sec
            print(f"  {label:<9} checkpointing={ckpt!s:<5} {1 / sec:6.2f} it/s  peak {mem:5.1f} GiB  "
                  f"{flops / 1e12:6.1f} TFLOP/it  MFU {mfu}")
            model.zero_grad(set_to_none=True)
    for ckpt in (False, True):
        print(f"  ratio ours/diffusers (checkpointing={ckpt}): "
              f"{results[('ours', ckpt)] / results[('diffusers', ckpt)]:.2f}")


def _autocast(fn):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        fn()


def main() -> None:
    bench_cpu()
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        bench_gpu()
    else:
        print("GPU: not run (no CUDA device)")


if __name__ == "__main__":
    main()
