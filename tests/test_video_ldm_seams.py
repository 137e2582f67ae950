"""Video LDM long videos (Blattmann et al. 2023, Sec. 3.2): on a tiny prediction model overfit to
one moving pattern, the context frames make the seams between `--long` chunks far smoother than
independent chunks (guidance w = 0), and the measure sees a seam where there is one. The first
frame comes from the image model alone (the paper's start); the step from it to the first chunk
is a seam of its own and is left out of both means. The given frames are conditioning only (the
paper's eq. 3), so each chunk regenerates them; on this tiny model its seams stay rougher than
the steps inside a chunk (docs/families.md has the numbers)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from svdcli.families import family_for
from svdcli.families.video_ldm import long_video, sampling
from svdcli.families.video_ldm.network import context_channels
from test_train_helpers import one_thread  # noqa: F401
from test_video_ldm import config, run_opts

T, S, N, H, WIDE = 4, 2, 10, 16, 64  # chunk frames, context frames, long-video frames, latent size (2x2 at the bottom), pattern width


def pattern() -> torch.Tensor:
    """(4, H, WIDE) smooth latent pattern, periodic in x; the clip moves it one pixel a frame."""
    xs = torch.arange(WIDE).float() * 2 * torch.pi / WIDE
    ys = torch.arange(H).float()[:, None] * 2 * torch.pi / 16
    return torch.stack([torch.sin(xs * (1 + c % 2) + c) * torch.cos(ys + c) * 1.5 for c in range(4)])


def window(base: torch.Tensor, start: int, frames: int) -> torch.Tensor:
    return torch.stack([torch.roll(base, -(start + i), dims=2)[:, :, :H] for i in range(frames)])


def overfit(steps: int = 400, batch: int = 4):
    """The tiny predict denoiser trained (all weights) on random windows of the moving pattern,
    S in {0, 1, 2} context frames at random, as the predict stage trains."""
    from svdcli.diffusion.edm import edm_loss, sample_sigmas_lognormal

    cfg = config("predict", **{"data.height": 8 * H, "data.width": 8 * H})
    denoiser = family_for("video_ldm").build(cfg).requires_grad_(True)
    opt = torch.optim.Adam(denoiser.parameters(), lr=2e-3)
    gen, base = torch.Generator().manual_seed(0), pattern()
    cond = {"crossattn": torch.zeros(batch * T, 77, 40), "concat": torch.zeros(batch * T, 4, H, H),
            "vector": torch.zeros(batch * T, 24)}
    for _ in range(steps):
        x0 = torch.cat([window(base, int(s), T) for s in torch.randint(0, WIDE, (batch,), generator=gen)])
        s = torch.randint(0, cfg.family_config.max_context_frames + 1, (batch,), generator=gen)
        mask = (torch.arange(T)[None] < s[:, None]).float().reshape(-1)
        c = {**cond, "concat": torch.cat([cond["concat"], context_channels(x0, mask)], 1)}
        sigma = sample_sigmas_lognormal(batch, -1.2, 1.2, generator=gen)
        loss = edm_loss(denoiser, x0, c, T, sigma=sigma, noise=torch.randn(x0.shape, generator=gen)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return SimpleNamespace(denoiser=denoiser.eval(), own=cfg.family_config, defaults=SimpleNamespace(frames=T),
                           stage="predict")


@pytest.mark.slow
def test_long_video_seams_are_smoothed_by_the_context():
    """Mean |x_{i+1} - x_i| of a 10-frame `--long` latent video (20 Euler steps, seed 0), at the
    three seams (after frames 3, 5, 7) vs inside chunks. Measured (16x16 latents): w = 1: seams
    0.189, inside 0.094; w = 0: seams 0.702, inside 0.107."""
    from svdcli.diffusion.schedules import karras_sigmas

    model = overfit()
    cond = {"crossattn": torch.zeros(1, 77, 40), "concat": torch.zeros(1, 4, H, H), "vector": torch.zeros(1, 24)}
    inputs = SimpleNamespace(noise=torch.randn(T, 4, H, H), cond=cond, uncond=cond)
    seams = [T - 1 + k * (T - S) for k in range(long_video.chunk_count(N, T, S) - 1)]
    inside = [i for i in range(1, N - 1) if i not in seams]
    rough = {}
    for w in (1.0, 0.0):
        opts = run_opts(frames=N, context_frames=S, context_guidance=w)
        opts.steps = 20
        with torch.no_grad():
            x = long_video.sample_long(model, inputs, opts, sampling.guided_denoiser(family_for("video_ldm"), model, opts, None),
                                       karras_sigmas(20), None)
        step = (x[1:] - x[:-1]).abs().mean((1, 2, 3))
        rough[w] = float(step[seams].mean()), float(step[inside].mean())
    assert seams == [3, 5, 7]
    assert rough[1.0][0] < 0.35 * rough[0.0][0], rough       # the context carries the motion over the seam
    assert rough[1.0][0] < 2.5 * rough[1.0][1], rough
    assert rough[0.0][0] > 3.0 * rough[0.0][1], rough       # the measure sees a seam when there is one
