"""The family seam and the one Denoiser cost nothing a user would see (issue 32).

- D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) against the network F called alone (the
  baseline) on the tiny video UNet: the Denoiser's share of a step;
- a family method that runs its module's function (`Family._own`, `sampling_steps`) against
  calling that function directly (the baseline), per call;
- EDM's churn (S_churn = 40, Karras et al. 2022, Alg. 2) against the deterministic Euler
  sampler (the baseline): the same network calls plus one noise draw a step;
- whole `svd sample` commands of a tiny VDM export and a tiny SVD checkpoint, start-up included
  (no baseline in this tree: docs/benchmarks.md holds them against the code before the change).

    .venv/bin/python -m benchmarks.bench_family_seam
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.timing import interleaved, median_seconds

REPO = Path(__file__).resolve().parents[1]


def denoiser_share() -> None:
    import torch

    from svdcli.diffusion.edm import Denoiser
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(0)
    unet = VideoUNet(UNetConfig.tiny()).eval()
    den = Denoiser(unet)
    t = 4
    x = torch.randn(t, 4, 16, 16)
    cond = {"crossattn": torch.randn(t, 1, 40), "vector": torch.randn(t, 24), "concat": torch.randn(t, 4, 16, 16)}
    sigma = torch.full((t,), 2.0)
    net_in = torch.cat([x / 5 ** 0.5, cond["concat"]], dim=1)
    c_noise = 0.25 * sigma.log()
    with torch.no_grad():
        d, f, ratio = interleaved(lambda: den(x, sigma, cond, t), lambda: unet(net_in, c_noise, cond["crossattn"],
                                                                                  cond["vector"], t), 15)
    print(f"Denoiser D(x, sigma) {d * 1e3:.2f} ms vs the UNet alone {f * 1e3:.2f} ms (baseline): x{ratio:.3f}")


def dispatch_cost() -> None:
    from types import SimpleNamespace

    from svdcli.families import family_for
    from svdcli.families.video_ldm import sampling

    family = family_for("video_ldm")
    model = SimpleNamespace(defaults=SimpleNamespace(frames=4))
    opts = SimpleNamespace(steps=25, family_options=SimpleNamespace(upsample=None, long=False, interpolate=None))
    n = 20000
    seam, direct, ratio = interleaved(lambda: [family.sampling_steps(model, opts) for _ in range(n)],
                                       lambda: [sampling.sampling_steps(family, model, opts) for _ in range(n)], 7)
    print(f"family.sampling_steps through the seam {seam / n * 1e6:.2f} us/call vs the function called directly "
          f"{direct / n * 1e6:.2f} us/call (baseline): x{ratio:.2f}, +{(seam - direct) / n * 1e6:.2f} us a call")


def churn_cost() -> None:
    import torch

    from svdcli.diffusion.edm import Denoiser
    from svdcli.diffusion.samplers import prior_sample, sample_euler
    from svdcli.diffusion.schedules import karras_sigmas
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet

    torch.manual_seed(0)
    den = Denoiser(VideoUNet(UNetConfig.tiny()).eval())
    t = 4
    cond = {"crossattn": torch.randn(t, 1, 40), "vector": torch.randn(t, 24), "concat": torch.randn(t, 4, 16, 16)}
    d = lambda x, sigma: den(x, sigma, cond, t)  # noqa: E731
    sigmas = karras_sigmas(10)
    x = prior_sample(torch.randn(t, 4, 16, 16), sigmas)
    with torch.no_grad():
        churned, plain, ratio = interleaved(
            lambda: sample_euler(d, x, sigmas, s_churn=40.0, s_tmin=0.05, s_tmax=50.0, s_noise=1.003,
                                 generator=torch.Generator().manual_seed(0)),
            lambda: sample_euler(d, x, sigmas), 7)
    print(f"Euler with churn (S_churn 40, 10 steps) {churned:.3f} s vs deterministic Euler {plain:.3f} s "
          f"(baseline): x{ratio:.3f}")


def _export_vdm(folder: Path) -> Path:
    import torch

    from svdcli.families import family_for
    from svdcli.train.config import config_from_dict

    family = family_for("vdm")
    cfg = config_from_dict({"family": "vdm", "stage": "video", "model": "tiny", "seed": 0,
                            "data": {"frames": 8, "height": 32, "width": 32}})
    den = family.build(cfg)
    with torch.no_grad():
        for p in den.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    path = folder / "vdm.safetensors"
    family.save(path, den.state_dict(), cfg, {"family": "vdm", "train_config": json.dumps(cfg.to_dict()), "step": "1"})
    return path


def whole_commands() -> None:
    from svdcli.families.svd.tiny import write_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        vdm = _export_vdm(folder)
        svd = write_tiny_checkpoint(folder / "svd.safetensors", frames=8, width=64, height=64)
        from PIL import Image

        Image.new("RGB", (64, 64), (120, 80, 200)).save(folder / "cond.png")
        runs = {"svd sample vdm (8 frames 32x32, 16 ancestral steps)":
                ["--checkpoint", vdm, "--steps", "16", "--out", folder / "v.mp4"],
                "svd sample svd tiny (8 frames 64x64, 8 Euler steps)":
                ["--checkpoint", svd, "--image", folder / "cond.png", "--steps", "8", "--out", folder / "s.mp4"]}
        for label, args in runs.items():
            cmd = [sys.executable, "-m", "svdcli", "sample", *map(str, args), "--no-progress", "--device", "cpu"]
            seconds = median_seconds(lambda: subprocess.run(cmd, cwd=REPO, check=True, capture_output=True), 3)
            print(f"{label}: {seconds:.2f} s whole command (median of 3)", flush=True)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    denoiser_share()
    dispatch_cost()
    churn_cost()
    whole_commands()


if __name__ == "__main__":
    main()
