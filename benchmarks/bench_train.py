"""Training throughput.

CPU (always): the tiny config through the real `svd train` command, 1 process (the baseline)
vs 2 processes under torchrun (gloo, ZeRO-2), one intra-op thread each: step time and
samples/s from the run's log.jsonl, first steps excluded. Then 1 process with `data.latents: true`
on shards packed with `--latents tiny:0` vs the same run encoding frames with the VAE (baseline).

GPU (when torch.cuda.is_available()): the full-size SVD UNet on 14 x 256x384 clips (latents
14 x 32x48), bf16 autocast, ZeRO-2, activation checkpointing, one process: samples/s, peak
memory and MFU (model FLOPs of forward + backward = 3 x forward, counted by torch's
FlopCounterMode; recomputation not counted) against the GPU's dense bf16 peak; baseline:
the same step without activation checkpointing.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CPU_STEPS, WARMUP = 10, 2
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def _cpu_run(data: Path, out: Path, procs: int, extra: tuple[str, ...] = ()) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from test_train_helpers import tiny_overrides

    sets = [a for kv in tiny_overrides(frames=4, steps=CPU_STEPS) + list(extra) for a in ("--set", kv)]
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
              if procs > 1 else [sys.executable])
    cmd = launch + ["-m", "svdcli", "train", "--stage", "video", "--config", str(REPO / "pipelines/train/video.yaml"),
                    "--data", str(data), "--out", str(out), "--deepspeed", str(REPO / "pipelines/deepspeed/zero2.json"),
                    "--no-progress", "--no-tensorboard", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    step = statistics.median(l["step_time_s"] for l in log[WARMUP:])
    batch = 2 * procs  # data.batch_size 2 per process
    return {"procs": procs, "step_s": step, "samples_per_s": batch / step, "wall_s": wall}


def bench_cpu() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from test_train_helpers import make_shards

    with tempfile.TemporaryDirectory() as tmp:
        data = make_shards(Path(tmp) / "data", clips=16)
        one = _cpu_run(data, Path(tmp) / "p1", 1)
        two = _cpu_run(data, Path(tmp) / "p2", 2)
    print("CPU, tiny UNet (2.9M), 4 frames x 64x64 px (latents 8x8), batch 2 per process, fp32, ZeRO-2")
    for r in (one, two):
        print(f"  {r['procs']} process(es): step {r['step_s'] * 1000:7.1f} ms  "
              f"{r['samples_per_s']:6.2f} samples/s  (whole run {r['wall_s']:.1f} s incl. start-up)")
    print(f"  2 vs 1 process: samples/s x{two['samples_per_s'] / one['samples_per_s']:.2f}, "
          f"step time x{two['step_s'] / one['step_s']:.2f}")


def bench_latents() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from test_train_helpers import make_shards

    with tempfile.TemporaryDirectory() as tmp:
        data = make_shards(Path(tmp) / "data", clips=16, latents="tiny:0")
        fly = _cpu_run(data, Path(tmp) / "fly", 1)
        stored = _cpu_run(data, Path(tmp) / "stored", 1, ("data.latents=true",))
    print("CPU, tiny config as above, 1 process: target latents from the VAE encoder vs stored latents.npy")
    for label, r in (("VAE encoder each step (baseline)", fly), ("stored latents (data.latents)", stored)):
        print(f"  {label}: step {r['step_s'] * 1000:7.1f} ms  {r['samples_per_s']:6.2f} samples/s")
    print(f"  stored vs encoder: step time x{stored['step_s'] / fly['step_s']:.2f}")


def _gpu_step_fn(checkpointing: bool, batch: int):
    import deepspeed  # noqa: F401 - the engine below
    import torch

    from svdcli.diffusion.edm import Denoiser, edm_loss
    from svdcli.train.config import config_from_dict
    from svdcli.train.engine import build_engine, init_distributed, load_ds_config, setup_env
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    info = setup_env()
    init_distributed(info)
    cfg = config_from_dict({"model": "svd", "activation_checkpointing": checkpointing, "data": {"batch_size": batch}})
    unet = VideoUNet(UNetConfig.svd())
    unet.gradient_checkpointing = checkpointing
    engine, _, _ = build_engine(Denoiser(unet).cuda(), cfg,
                                load_ds_config(REPO / "pipelines/deepspeed/zero2.json", cfg, 1))
    t, h, w = 14, 32, 48
    x0 = torch.randn(batch * t, 4, h, w, device="cuda")
    cond = {"crossattn": torch.randn(batch * t, 1, 1024, device="cuda"),
            "concat": torch.randn(batch * t, 4, h, w, device="cuda"),
            "vector": torch.randn(batch * t, 768, device="cuda")}

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = edm_loss(engine, x0, cond, t).mean()
        engine.backward(loss)
        engine.step()

    def forward_flops() -> float:
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16), FlopCounterMode(display=False) as fc:
            edm_loss(engine.module, x0, cond, t)
        return float(fc.get_total_flops())

    return step, forward_flops, engine


def _gpu_measure(checkpointing: bool, batch: int, steps: int = 10) -> dict:
    import torch

    step, forward_flops, engine = _gpu_step_fn(checkpointing, batch)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    flops = 3 * forward_flops()
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    out = {"batch": batch, "step_s": dt, "samples_per_s": batch / dt,
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
           "mfu": flops / dt / (peak * 1e12) if peak else None, "device": name}
    del engine, step, forward_flops
    import gc

    gc.collect()  # the next configuration builds its own engine: free this one's weights and states
    torch.cuda.empty_cache()
    return out


def bench_gpu() -> None:
    batch = int(os.environ.get("SVD_BENCH_BATCH", "4"))
    print(f"GPU, SVD UNet (1.52B), 14 x 256x384 (latents 32x48), batch {batch}, bf16 autocast, ZeRO-2")
    base = _gpu_measure(False, batch)
    ckpt = _gpu_measure(True, batch)
    for label, r in (("no activation checkpointing (baseline)", base), ("activation checkpointing", ckpt)):
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"  {label}: {r['samples_per_s']:.2f} samples/s, step {r['step_s'] * 1000:.0f} ms, "
              f"peak {r['peak_mem_gib']:.1f} GiB, MFU {mfu} ({r['device']})")
    print(f"  checkpointing vs baseline: samples/s x{ckpt['samples_per_s'] / base['samples_per_s']:.2f}, "
          f"peak memory x{ckpt['peak_mem_gib'] / base['peak_mem_gib']:.2f}")


def main() -> None:
    bench_cpu()
    bench_latents()
    import torch

    if torch.cuda.is_available():
        bench_gpu()
    else:
        print("GPU: not run (no CUDA device)")


if __name__ == "__main__":
    main()
