"""Video LDM (Blattmann et al. 2023) on the tiny model: the frozen image model inside the video
model (Sec. 3.1), exact context guidance, and the mask conditioning keeping the frames it is
given (Sec. 3.2, 3.3). Random weights throughout, so the conditioning changes the output."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from svdcli.families import family_for
from svdcli.families.video_ldm import sampling
from svdcli.families.video_ldm.network import context_channels
from test_train_helpers import one_thread  # noqa: F401
from numeric import assert_close_ulps

REPO = Path(__file__).resolve().parents[1]
T, H, W = 4, 16, 16  # frames, latent size (128x128 pixels: a lone frame still normalises over 2x2 at the bottom)


def config(stage: str, **extra):
    from svdcli.train.config import load_config

    values = {"model": "tiny", "precision": "fp32", "activation_checkpointing": "false", "data.frames": T,
              "data.height": 128, "data.width": 128, **extra}
    recipe = REPO / "pipelines/train/video_ldm" / f"{stage}.yaml"
    return load_config(recipe, [f"{k}={v}" for k, v in values.items()])


def randomised(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Zero-initialised layers (temporal outputs, mask convs) made random, so every path matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.abs().sum():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return module.eval()


def inputs(n: int, seed: int = 1, channels: int = 4):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, channels, H, W, generator=gen), torch.randn(n, 77, 40, generator=gen),
            torch.randn(n, 24, generator=gen))


@torch.no_grad()
def test_with_alpha_one_the_video_model_is_the_image_model_frame_by_frame():
    """Sec. 3.1: out = alpha z_spatial + (1 - alpha) z_temporal; alpha = 1 leaves the image LDM."""
    denoiser = randomised(family_for("video_ldm").build(config("video")))
    unet = denoiser.net.unet
    x, ctx, vec = inputs(2 * T, channels=unet.cfg.in_channels)
    c_noise = torch.full((2 * T,), 0.3)
    video = unet(x, c_noise, ctx, vec, T)                                # learned alpha: temporal mixing
    per_frame = torch.cat([unet(x[i:i + 1], c_noise[:1], ctx[i:i + 1], vec[i:i + 1], 1, torch.ones(1, 1))
                           for i in range(2 * T)])                       # the image model, one frame at a time
    for name, p in unet.named_parameters():
        if name.endswith("mix_factor"):
            p.fill_(1e4)                                                 # sigmoid -> alpha = 1 exactly
    spatial_only = unet(x, c_noise, ctx, vec, T)
    assert torch.allclose(spatial_only, per_frame, atol=1e-5), (spatial_only - per_frame).abs().max()
    assert (video - per_frame).abs().max() > 1e-3                        # the temporal layers do act


def guided(model, w: float):
    opts = SimpleNamespace(max_cfg=1.0, family_options={"context_guidance": w})
    return sampling.guided_denoiser(model, opts, None)


@torch.no_grad()
def test_context_guidance_zero_is_the_unconditional_prediction_and_one_the_conditional():
    """Sec. 3.2: D = D(no context) + w (D(context) - D(no context)), exactly at w = 0 and w = 1."""
    denoiser = randomised(family_for("video_ldm").build(config("predict")))
    model = SimpleNamespace(denoiser=denoiser)
    x, ctx, _ = inputs(T)
    cond = {"crossattn": ctx, "concat": torch.zeros(T, 4, H, W), "vector": torch.zeros(T, 24)}
    uncond = {**cond, "crossattn": torch.zeros_like(ctx)}
    known, mask = inputs(T, seed=2)[0], torch.tensor([1.0, 1.0, 0.0, 0.0])
    c_s = context_channels(known, mask)
    sigma = torch.tensor(2.0)

    def direct(c):
        return denoiser(x, sigma, {**cond, "concat": torch.cat([cond["concat"], c], 1)}, T)

    with_context, without = direct(c_s), direct(torch.zeros_like(c_s))
    g0 = guided(model, 0.0)(x, sigma, cond=cond, uncond=uncond, context=c_s)
    g1 = guided(model, 1.0)(x, sigma, cond=cond, uncond=uncond, context=c_s)
    g2 = guided(model, 2.0)(x, sigma, cond=cond, uncond=uncond, context=c_s)
    assert_close_ulps(g0, without)
    assert_close_ulps(g1, with_context)
    assert torch.allclose(g2, without + 2.0 * (with_context - without), atol=1e-6)
    assert (with_context[2:] - without[2:]).abs().max() > 1e-3          # the context reaches the free frames


def tiny_model(stage: str, **extra):
    family = family_for("video_ldm")
    cfg = config(stage, **extra)
    return SimpleNamespace(family=family, denoiser=randomised(family.build(cfg)), own=cfg.family_config,
                           defaults=SimpleNamespace(frames=cfg.data.frames), stage=stage)


def run_opts(**family_options):
    return SimpleNamespace(max_cfg=1.0, steps=4, sampler="euler", seed=0, frames=family_options.pop("frames", T),
                           family_options={"context_guidance": 1.0, **family_options})


def text_inputs(frames: int):
    _, ctx, _ = inputs(1)
    cond = {"crossattn": ctx, "concat": torch.zeros(1, 4, H, W), "vector": torch.zeros(1, 24)}
    return SimpleNamespace(noise=torch.randn(frames, 4, H, W), cond=cond,
                           uncond={**cond, "crossattn": torch.zeros_like(ctx)})


@torch.no_grad()
def test_the_prediction_model_keeps_its_context_frames():
    from svdcli.diffusion.schedules import karras_sigmas

    model = tiny_model("predict")
    opts, sigmas = run_opts(), karras_sigmas(4)
    known, mask = inputs(T, seed=3)[0], torch.tensor([1.0, 1.0, 0.0, 0.0])
    den = sampling.guided_denoiser(model, opts, None)
    ins = text_inputs(T)
    x = sampling._generate(den, ins.noise, sigmas, ins.cond, ins.uncond, context_channels(known, mask), "euler", None)
    error = (x[:2] - known[:2]).abs().max().item()
    assert error < 1e-5, error                                          # measured: ~1e-7 (float32 rounding)
    assert (x[2:] - known[2:]).abs().max() > 0.1                        # the free frames are generated

    long = sampling.sample_long(model, ins, run_opts(frames=10, context_frames=2), den, sigmas, None)
    assert long.shape == (10, 4, H, W)


@torch.no_grad()
def test_interpolation_keeps_its_keyframes_and_makes_4t_minus_3_frames():
    from svdcli.diffusion.schedules import karras_sigmas

    model = tiny_model("interpolate", **{"data.frames": 9})
    opts, sigmas = run_opts(), karras_sigmas(3)
    den = sampling.guided_denoiser(model, opts, None)
    keys = inputs(5, seed=4)[0]                                         # 5 keyframes: windows of 3 sharing one
    out = sampling.interpolate_once(model, keys, text_inputs(1), opts, den, sigmas, torch.Generator().manual_seed(0), None)
    assert out.shape[0] == 4 * 5 - 3
    error = (out[::4] - keys).abs().max().item()
    assert error < 1e-5, error
    between = out[1::4]
    assert (between - keys[:-1]).abs().max() > 0.1                      # new frames, not copies
    assert sampling.interpolation_windows(5, 3) == [(0, 3), (2, 5)]


def test_chunk_count_covers_the_length():
    assert sampling.chunk_count(4, 4, 2) == 1
    assert sampling.chunk_count(10, 4, 2) == 4                          # 4 + 2 + 2 + 2
    assert sampling.chunk_count(11, 4, 2) == 5


def test_recipes_name_the_family_and_validate():
    for stage in ("video", "predict", "interpolate"):
        cfg = config(stage, **({"data.frames": 5} if stage == "interpolate" else {}))
        assert cfg.family == "video_ldm" and cfg.stage == stage and cfg.family_config.freeze_spatial
    with pytest.raises(Exception, match="freeze_spatial"):
        config("video", freeze_spatial="false")
    with pytest.raises(Exception, match="multiple of interpolation_factor"):
        config("interpolate", **{"data.frames": 6})
