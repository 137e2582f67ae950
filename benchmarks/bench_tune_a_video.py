"""Tune-A-Video on the tiny config (CPU): one-shot tuning step time and peak memory with
sparse-causal ST-Attn vs full spatio-temporal attention over the same frames, and the time of
DDIM inversion + guided DDIM sampling. Each attention variant runs in its own process, so the
peak resident memory (ru_maxrss) is its own.

Run: .venv/bin/python -m benchmarks.bench_tune_a_video
"""
from __future__ import annotations

import json
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

FRAMES, SIZE, STEPS, SAMPLE_STEPS = 8, 128, 3, 10


def _write_base(path: Path) -> Path:
    """A tiny text-to-image export in the svd family's format (random weights on every path)."""
    import torch

    from svdcli.families import family_for
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.train.config import config_from_dict

    cfg = config_from_dict({"family": "svd", "stage": "image", "model": "tiny", "precision": "fp32",
                            "cond": {"mode": "t2v"}, "data": {"frames": 1, "height": SIZE, "width": SIZE}})
    torch.manual_seed(0)
    unet = VideoUNet(UNetConfig.tiny())
    with torch.no_grad():
        for p in unet.parameters():
            if not p.abs().sum():
                p.normal_(std=0.02)
    family_for("svd").save(path, {"net." + k: v for k, v in unet.state_dict().items()}, cfg,
                           {"family": "svd", "train_config": json.dumps(cfg.to_dict()), "step": "0"})
    return path


def _run(attention: str, base: str, sample: bool) -> dict:
    import resource

    import torch

    from svdcli.families.tune_a_video.base import load_base
    from svdcli.families.tune_a_video.network import build_denoiser, make_cond

    torch.set_num_threads(2)
    b = load_base(base)
    denoiser = build_denoiser(b, attention, seed=0)
    h = SIZE // 8
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(FRAMES, 4, h, h, generator=g)
    cond = make_cond(b.text(["a man is skiing"]).float(), FRAMES, b, (h, h))
    opt = torch.optim.AdamW([p for p in denoiser.parameters() if p.requires_grad], lr=3e-5)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for i in range(STEPS + 1):                  # the first step warms up the kernels
        t0 = time.perf_counter()
        opt.zero_grad()
        denoiser.loss(x0, torch.randn(x0.shape, generator=g), torch.tensor([1.0]), cond, FRAMES).mean().backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    out = {"attention": attention, "step_s": sorted(times[1:])[len(times[1:]) // 2],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss0 / 1024}
    if sample:
        out.update(_sample(b, denoiser.eval(), x0, cond))
    return out


def _sample(b, denoiser, x0, cond) -> dict:
    import torch

    from svdcli.families.tune_a_video.network import make_cond
    from svdcli.families.tune_a_video.sampling import GUIDANCE, TAVModel, cfg_denoiser, ddim_sigmas, invert, run_ddim

    model = TAVModel(family=None, defaults=None, kind="bench", base=b, denoiser=denoiser)
    uncond = make_cond(b.text([""]).float(), FRAMES, b, x0.shape[-2:])
    sigmas = ddim_sigmas(b.prediction, SAMPLE_STEPS, "cpu")
    with torch.no_grad():
        t0 = time.perf_counter()
        noise = invert(model, x0, uncond, sigmas, FRAMES)
        t1 = time.perf_counter()
        run_ddim(model, noise, cfg_denoiser(denoiser, FRAMES, GUIDANCE), sigmas, cond, uncond)
        t2 = time.perf_counter()
    return {"invert_s": t1 - t0, "sample_s": t2 - t1}


def _attention_layer(t: int = 8, n: int = 1024, c: int = 64, reps: int = 3) -> dict:
    """One attention layer alone, forward + backward, the two variants interleaved (median s)."""
    import copy

    import torch

    from svdcli.models.attention import CrossAttention
    from svdcli.models.st_attention import FullSTAttention, SparseCausalAttention

    torch.manual_seed(0)
    layer = CrossAttention(c, heads=c // 32, dim_head=32)
    variants = {"sparse_causal": SparseCausalAttention.inflate(copy.deepcopy(layer)),
                "full": FullSTAttention.inflate(copy.deepcopy(layer))}
    x = torch.randn(t, n, c, requires_grad=True)
    times = {k: [] for k in variants}
    for _ in range(reps + 1):
        for name, attn in variants.items():
            t0 = time.perf_counter()
            attn(x, t).square().mean().backward()
            times[name].append(time.perf_counter() - t0)
    return {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}


def main() -> None:
    layer = _attention_layer()
    print(f"one attention layer, 8 frames x 1024 tokens (a 256x256 latent's top level), forward+backward: "
          f"sparse-causal {layer['sparse_causal'] * 1e3:.0f} ms, full {layer['full'] * 1e3:.0f} ms, "
          f"full / sparse-causal x{layer['full'] / layer['sparse_causal']:.2f}")
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        base = str(_write_base(Path(tmp) / "image.safetensors"))
        results = {}
        for attention in ("sparse_causal", "full"):
            with ctx.Pool(1) as pool:
                results[attention] = pool.apply(_run, (attention, base, attention == "sparse_causal"))
    sparse, full = results["sparse_causal"], results["full"]
    print(f"tiny UNet, {FRAMES} frames at {SIZE}x{SIZE} (latents {SIZE // 8}x{SIZE // 8}), CPU, "
          f"{STEPS} timed tuning steps (median)")
    for r in (sparse, full):
        print(f"  {r['attention']:>13}: tuning step {r['step_s']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
              f"(before the steps {r['rss_before_mb']:.0f} MB)")
    extra = lambda r: r["peak_rss_mb"] - r["rss_before_mb"]  # noqa: E731
    print(f"  full / sparse-causal: step time x{full['step_s'] / sparse['step_s']:.2f}, "
          f"memory added by the steps x{extra(full) / max(extra(sparse), 1e-9):.2f}")
    print(f"  sampling (sparse-causal): DDIM inversion {SAMPLE_STEPS} steps {sparse['invert_s']:.1f} s, "
          f"guided DDIM {SAMPLE_STEPS} steps {sparse['sample_s']:.1f} s")


if __name__ == "__main__":
    main()
