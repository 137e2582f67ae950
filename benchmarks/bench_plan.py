"""The training planner (`svd train --plan`): how fast, and how close to measured memory.

1. Tracing, same network and shapes in the same run: the tiny UNet's forward + backward at
   4 frames of 64x64, bf16, on the meta device with svdcli's LiveBytes and autocast replay, against
   torch's MemTracker under FakeTensorMode (the baseline first tried), which is capped at CAP
   seconds and run in its own process.
2. Whole commands, start-up included: `svd train --plan` for the tiny model and for the full-size
   SVD-XT finetune at 25 x 576x1024 on 8 GPUs (both checkpointing settings traced).
3. Accuracy: plan / peak measured on the CPU (torch's allocator through the profiler, the real
   DeepSpeed engine; tests/plan_helpers.py) for small configs of the tiny model.

Run: .venv/bin/python -m benchmarks.bench_plan
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CAP = 120
MEMTRACKER = """
import time, torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker
from svdcli.models.config import UNetConfig
from svdcli.models.unet import VideoUNet
with FakeTensorMode():
    cfg = UNetConfig.tiny()
    net = VideoUNet(cfg)
    x, t, ctx, y = (torch.randn(4, cfg.in_channels, 8, 8), torch.randn(4), torch.randn(4, 1, cfg.context_dim),
                    torch.randn(4, cfg.adm_in_channels))
    tracker = MemTracker()
    tracker.track_external(net)
    t0 = time.perf_counter()
    with tracker, torch.autocast("cpu", dtype=torch.bfloat16):
        loss = net(x, t, ctx, y, 4).float().square().mean()
        print("forward", time.perf_counter() - t0, flush=True)
        loss.backward()
        print("backward", time.perf_counter() - t0, flush=True)
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def memtracker_seconds() -> tuple[float | None, float | None]:
    """(forward, forward + backward) seconds of MemTracker on the tiny UNet; None past CAP."""
    seen: dict[str, float] = {}
    try:
        proc = subprocess.run([sys.executable, "-c", MEMTRACKER], env=_env(), capture_output=True, text=True,
                              timeout=CAP)
        out = proc.stdout
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        seen[name] = float(value)
    return seen.get("forward"), seen.get("backward")


def ours_seconds() -> tuple[float, float]:
    """(forward, forward + backward) seconds of the planner's trace of the same step."""
    import torch

    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.train.plan.autocast import EmulatedAutocast
    from svdcli.train.plan.live import LiveBytes

    cfg = UNetConfig.tiny()
    with torch.device("meta"):
        net = VideoUNet(cfg)
        x, t, ctx, y = (torch.randn(4, cfg.in_channels, 8, 8), torch.randn(4), torch.randn(4, 1, cfg.context_dim),
                        torch.randn(4, cfg.adm_in_channels))
    t0 = time.perf_counter()
    with LiveBytes(), EmulatedAutocast("cpu"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = net(x, t, ctx, y, 4).float().square().mean()
        forward = time.perf_counter() - t0
        torch.autograd.Variable._execution_engine.run_backward(
            (loss,), (torch.ones_like(loss),), False, False, (), allow_unreachable=True, accumulate_grad=True)
    return forward, time.perf_counter() - t0


def bench_tracing() -> None:
    ours = ours_seconds()
    theirs = memtracker_seconds()
    print("tracing the tiny UNet (2.9M), forward + backward, 4 x 64x64, bf16:")
    print(f"  svdcli meta + LiveBytes:      forward {ours[0]:6.2f} s, + backward {ours[1]:6.2f} s")
    fmt = lambda v: f"{v:6.2f} s" if v is not None else f"> {CAP} s"  # noqa: E731
    print(f"  MemTracker + FakeTensorMode:  forward {fmt(theirs[0])}, + backward {fmt(theirs[1])}")
    for i, name in enumerate(("forward", "forward + backward")):
        if theirs[i] is not None:
            print(f"  MemTracker / ours, {name}: {theirs[i] / ours[i]:.0f}x")
        else:
            print(f"  MemTracker / ours, {name}: > {CAP / ours[i]:.0f}x (cut at {CAP} s)")


def bench_commands() -> None:
    runs = {
        "tiny model, 4 x 64x64": ["--config", str(REPO / "pipelines/train/video.yaml"), "--stage", "video",
                                  "--set", "model=tiny", "--set", "data.height=64", "--set", "data.width=64",
                                  "--set", "data.frames=4"],
        "SVD-XT full UNet, 25 x 576x1024, 8 GPUs": [
            "--config", str(REPO / "pipelines/train/fit/svd_xt_full_80gb.yaml"), "--stage", "finetune",
            "--deepspeed", str(REPO / "pipelines/deepspeed/zero2.json"), "--gpus", "8", "--gpu-memory", "80"],
    }
    print("whole command `svd train --plan` (start-up included, one run each):")
    for name, args in runs.items():
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "svdcli", "train", "--plan", *args], cwd=REPO, env=_env(),
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        peak = next((l for l in proc.stdout.splitlines() if l.startswith("peak:")), proc.stderr.strip()[-200:])
        print(f"  {name:42s} {wall:6.1f} s   {peak}")


def bench_accuracy() -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from plan_helpers import ds_config, measured_peak, tiny_config

    from svdcli.train.plan.plan import make_plan

    cases = {"fp32, no ZeRO": (dict(), 0), "bf16, checkpointing, ZeRO-2": (dict(precision="bf16",
             activation_checkpointing="true"), 2), "LoRA, bf16, ZeRO-1": (dict(precision="bf16", stage="finetune",
             lora__rank=8), 1), "stored latents, 128 px, ZeRO-2": (dict(data__latents="true", data__height=128,
             data__width=128), 2)}
    print("plan vs measured peak on the CPU (tiny model, one process, the real DeepSpeed engine):")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (values, zero) in cases.items():
            cfg = tiny_config(**values)
            ds = ds_config(cfg, zero, Path(tmp))
            plan = make_plan(cfg, ds, 1, device="cpu").peak
            measured = measured_peak(cfg, ds)["peak"]
            print(f"  {name:34s} plan {plan / 2**20:7.1f} MiB  measured {measured / 2**20:7.1f} MiB  "
                  f"plan/measured {plan / measured:.3f}")


def main() -> None:
    import torch

    torch.set_num_threads(1)
    bench_tracing()
    bench_commands()
    bench_accuracy()


if __name__ == "__main__":
    main()
