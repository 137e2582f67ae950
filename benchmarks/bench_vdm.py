"""VDM on the CPU, tiny config: what joint image-video training, temporal attention and
reconstruction-guided extension cost.

  - training step (prepare + loss + backward + AdamW) on the same 2 x 8-frame video batch at
    32x32, without joint images and with image_ratio 0.5 (4 images appended per video);
  - temporal attention (one block, 32 channels, 16x16 positions) forward + backward at 8, 16
    and 32 frames, and the whole U-Net forward at those frame counts;
  - extension: seconds per new frame, reconstruction guidance (a backward pass per step) vs
    the replacement method, 16 steps, 8-frame windows (4 known + 4 new).
Each timing is the median of `REPEATS` after one warm-up, on one thread (two intra-op threads
on a shared 2-core machine run several times slower, not faster). Run: python -m benchmarks.bench_vdm
"""
from __future__ import annotations

import torch

from benchmarks.timing import median_seconds

REPEATS = 3


def _time(fn, repeats: int = REPEATS) -> float:
    return median_seconds(fn, repeats, warmup=True)


def train_step_times() -> dict[str, float]:
    from svdcli.families import family_for
    from svdcli.train.config import config_from_dict

    family, out = family_for("vdm"), {}
    video = torch.rand(2, 8, 3, 32, 32) * 2 - 1
    for ratio in (0.0, 0.5):
        cfg = config_from_dict({"family": "vdm", "model": "tiny", "image_ratio": ratio,
                                "data": {"frames": 8, "height": 32, "width": 32, "batch_size": 2}})
        denoiser = family.build(cfg)
        opt = torch.optim.AdamW(denoiser.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)

        def step():
            batch = family.prepare(video, {"caption": ["", ""]}, None, cfg, gen, "cpu")
            sigma = family.training_sigmas(2, cfg, gen)
            loss = family.loss(denoiser, batch, sigma, torch.randn(batch.x0.shape, generator=gen)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        out[f"image_ratio {ratio:g}"] = _time(step)
    return out


def temporal_attention_times() -> dict[int, tuple[float, float]]:
    from svdcli.families.vdm.config import tiny
    from svdcli.families.vdm.network import TemporalAttention, VDMUNet

    attn, net, out = TemporalAttention(32, heads=2, max_offset=32), VDMUNet(tiny()).eval(), {}
    for frames in (8, 16, 32):
        x = torch.randn(frames, 32, 16, 16, requires_grad=True)

        def block():
            attn(x, frames).sum().backward()

        z = torch.randn(frames, 3, 32, 32)
        with torch.no_grad():
            whole = _time(lambda: net(z, torch.full((frames,), 0.5), frames=frames))
        out[frames] = (_time(block), whole)
    return out


def extension_times() -> dict[str, float]:
    from svdcli.diffusion.schedules import CosineSchedule
    from svdcli.families.vdm.config import VDMConfig
    from svdcli.families.vdm.sampling import build_denoiser, extend

    den = build_denoiser(VDMConfig(model="tiny"), seed=0).eval()
    d = lambda x, s: den(x, s, {}, x.shape[0])  # noqa: E731
    clip, sigmas, out = torch.rand(4, 3, 32, 32) * 2 - 1, CosineSchedule().sigmas(16), {}
    for method in ("reconstruction", "replacement"):
        with torch.no_grad():
            out[method] = _time(lambda: extend(d, clip, 8, 8, sigmas, method, 4.0, seed=0), repeats=1) / 8
    return out


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, tiny VDM config on the CPU")
    train = train_step_times()
    base = train["image_ratio 0"]
    for name, sec in train.items():
        print(f"train step, 2 x 8 frames at 32x32, {name}: {sec * 1e3:.1f} ms ({sec / base:.2f}x)")
    attn = temporal_attention_times()
    for frames, (block, whole) in attn.items():
        print(f"{frames:2d} frames: temporal attention fwd+bwd {block * 1e3:.1f} ms ({block / attn[8][0]:.2f}x of 8), "
              f"U-Net forward {whole * 1e3:.1f} ms ({whole / attn[8][1]:.2f}x of 8)")
    ext = extension_times()
    for method, sec in ext.items():
        print(f"extension, {method}: {sec:.3f} s per new frame")
    print(f"reconstruction / replacement: {ext['reconstruction'] / ext['replacement']:.2f}x")


if __name__ == "__main__":
    main()
