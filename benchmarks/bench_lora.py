"""Sampling step time with camera-motion LoRAs: the base model, one LoRA applied at sampling
time (`svd sample --lora`), and the same LoRA merged into the weights (`svd convert
--merge-lora`). Tiny config on the CPU: 14 frames at 64x64, one guided step = cond and
uncond in one batched UNet call, rank-16 LoRA on every temporal attention projection. One
thread, and the three models take turns call by call, so load from other processes on a shared
machine slows all three alike.

Run: .venv/bin/python -m benchmarks.bench_lora
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

FRAMES, SIZE, RANK, REPEATS = 14, 64, 16, 9


def _lora_file(ckpt: Path, path: Path) -> Path:
    """A rank-16 LoRA for the checkpoint's UNet with random (nonzero) B."""
    from svdcli.families.svd.lora import stored_unet
    from svdcli.models.config import UNetConfig
    from svdcli.models.lora import apply_lora, base_digest, lora_state
    from svdcli.models.lora_file import save_lora_file
    from svdcli.models.unet import VideoUNet

    base = stored_unet(ckpt)
    unet = VideoUNet(UNetConfig.tiny())
    unet.load_state_dict(base)
    torch.manual_seed(0)
    apply_lora(unet, RANK, 16.0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("lora_B"):
                p.normal_(0, 0.02)
    return save_lora_file(path, lora_state(unet.state_dict()), rank=RANK, alpha=16.0,
                          target="temporal_attention", base_digest=base_digest(base))


def _merged(ckpt: Path, lora: Path, out: Path) -> Path:
    from typer.testing import CliRunner

    from svdcli.cli.main import app

    result = CliRunner().invoke(app, ["convert", str(ckpt), "--to", "ours", "--out", str(out), "--merge-lora", str(lora)])
    assert result.exit_code == 0, result.output
    return out


def guided_step(ckpt: Path, loras=()):
    """A closure running one guided sampling step (the denoiser the sampler calls)."""
    from svdcli.sample.pipeline import SampleOptions, VideoPipeline

    pipe = VideoPipeline.from_checkpoint(ckpt, device="cpu", dtype="fp32")
    image = (torch.arange(SIZE * SIZE * 3) % 251).reshape(SIZE, SIZE, 3).numpy().astype("uint8")
    opts = pipe.resolve(SampleOptions(frames=FRAMES, steps=1, lora=list(loras) or None), image, warn=lambda m: None)
    with torch.no_grad():
        inputs = pipe.family.sampling_inputs(pipe.model, image, opts, pipe.device, pipe.dtype)
    denoiser = pipe.family.guided_denoiser(pipe.model, opts, None)
    sigma = torch.full((inputs.noise.shape[0],), 10.0)

    @torch.no_grad()
    def step() -> float:
        t0 = time.perf_counter()
        denoiser(inputs.noise * 10.0, sigma, cond=inputs.cond, uncond=inputs.uncond)
        return time.perf_counter() - t0

    return step


def step_times(steps: dict) -> dict[str, float]:
    """Median seconds per step of each closure, called in turn (a first round warms up)."""
    times = {name: [] for name in steps}
    for i in range(REPEATS + 1):
        for name, step in steps.items():
            t = step()
            if i:
                times[name].append(t)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    from svdcli.families.svd.tiny import write_tiny_checkpoint

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = write_tiny_checkpoint(tmp / "base.safetensors", frames=FRAMES, width=SIZE, height=SIZE)
        lora = _lora_file(ckpt, tmp / "pan_right.safetensors")
        merged = _merged(ckpt, lora, tmp / "merged.safetensors")
        kib = lora.stat().st_size / 1024
        print(f"tiny UNet, {FRAMES} frames {SIZE}x{SIZE}, rank {RANK}; LoRA file {kib:.0f} KiB, "
              f"checkpoint {ckpt.stat().st_size / 2**20:.1f} MiB; {torch.get_num_threads()} thread(s), "
              f"median of {REPEATS}")
        t = step_times({"base": guided_step(ckpt), "applied": guided_step(ckpt, [(lora, 1.0)]),
                        "merged": guided_step(merged)})
        base, applied, folded = t["base"], t["applied"], t["merged"]
    print(f"step time  base {base * 1e3:7.1f} ms")
    print(f"           1 LoRA applied {applied * 1e3:7.1f} ms  ({applied / base:.2f}x base)")
    print(f"           LoRA merged    {folded * 1e3:7.1f} ms  ({folded / base:.2f}x base)")


if __name__ == "__main__":
    main()
