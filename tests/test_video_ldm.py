"""Video LDM (Blattmann et al. 2023) on the tiny model: the frozen image model inside the video
model (Sec. 3.1) and what it is fed (its own micro-conditioning, its own unconditional text),
exact context guidance, the mask conditioning reaching the network and the loss covering every
frame (Sec. 3.2, eq. 3), long videos started by the image model, interpolation keeping its
keyframes (Sec. 3.3). Random weights throughout, so the conditioning changes the output."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from svdcli.families import family_for
from svdcli.families.video_ldm import long_video, sampling
from svdcli.families.video_ldm.config import VideoLDMOptions
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
    opts = SimpleNamespace(max_cfg=1.0, family_options=VideoLDMOptions(context_guidance=w))
    return sampling.guided_denoiser(family_for("video_ldm"), model, opts, None)


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
                           family_options=VideoLDMOptions(**family_options))


def text_inputs(frames: int):
    _, ctx, _ = inputs(1)
    cond = {"crossattn": ctx, "concat": torch.zeros(1, 4, H, W), "vector": torch.zeros(1, 24)}
    return SimpleNamespace(noise=torch.randn(frames, 4, H, W), cond=cond,
                           uncond={**cond, "crossattn": torch.zeros_like(ctx)})


@torch.no_grad()
def test_the_context_reaches_the_network_through_the_mask_convs():
    """c_S changes the prediction of every frame, the free ones too, and only through the mask
    convs: with them zeroed (disconnected) two different contexts give the same output."""
    denoiser = randomised(family_for("video_ldm").build(config("predict")))
    x, ctx, vec = inputs(T)
    cond = {"crossattn": ctx, "concat": torch.zeros(T, 4, H, W), "vector": vec}
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    a, b = (context_channels(inputs(T, seed=s)[0], mask) for s in (2, 3))

    def d(c_s):
        return denoiser(x, torch.tensor(2.0), {**cond, "concat": torch.cat([cond["concat"], c_s], 1)}, T)

    changed = (d(a) - d(b)).abs().amax((1, 2, 3))
    assert (changed > 1e-3).all(), changed                                  # every frame, free ones too
    for conv in denoiser.net.context_convs:
        conv.weight.zero_()
        conv.bias.zero_()
    assert (d(a) - d(b)).abs().max() == 0                                   # nothing else carries c_S


def test_the_loss_covers_the_context_frames_and_trains_every_mask_conv():
    """Sec. 3.2, eq. 3: E ||y - f(z_tau; c_S, c, tau)||^2 over the whole clip: the given frames are
    conditioning, not copied into D's output, so they are denoised and trained like the rest."""
    from svdcli.diffusion.edm import loss_weight
    from svdcli.families.base import TrainBatch

    family = family_for("video_ldm")
    denoiser = randomised(family.build(config("predict"))).train()
    x0, ctx, vec = inputs(T, seed=4)
    mask = torch.tensor([1.0, 1.0, 0.0, 0.0])
    cond = {"crossattn": ctx, "vector": vec,
            "concat": torch.cat([torch.zeros(T, 4, H, W), context_channels(x0, mask)], 1)}
    noise, sigma = inputs(T, seed=5)[0], torch.tensor([1.5])
    loss = family.loss(denoiser, TrainBatch(x0, cond, T), sigma, noise)
    # by hand: D = c_skip x + c_out F(c_in x (+) concat, c_noise) on every frame (EDM eq. 7)
    x, s = x0 + 1.5 * noise, torch.full((T, 1, 1, 1), 1.5)
    skip, out, c_in, c_noise = denoiser.scaling(s)
    f = denoiser.net(torch.cat([x * c_in, cond["concat"]], 1), c_noise.flatten(), ctx, vec, T)
    per_frame = loss_weight(s) * (f * out + x * skip - x0) ** 2
    torch.testing.assert_close(loss, per_frame.mean().reshape(1), rtol=1e-5, atol=0)
    assert per_frame[:2].mean() > 0.01 * per_frame[2:].mean()               # the context frames count
    loss.sum().backward()
    grads = [conv.weight.grad for conv in denoiser.net.context_convs]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)          # every mask conv is connected


@torch.no_grad()
def test_a_long_video_starts_from_the_image_model_then_chunks_on_its_context():
    """Sec. 3.2: one frame from the image model, the first chunk conditioned on it (S = 1), then
    each chunk on the last S = 2 frames. Frame 0 does not depend on the temporal layers (the
    image model alone); the chunks depend on the context they are given."""
    from svdcli.diffusion.schedules import karras_sigmas

    sigmas, ins = karras_sigmas(3), text_inputs(T)
    opts = run_opts(frames=9, context_frames=2)

    def long(model, w=1.0):
        o = run_opts(frames=9, context_frames=2, context_guidance=w)
        return long_video.sample_long(model, ins, o, sampling.guided_denoiser(family_for("video_ldm"), model, o, None), sigmas, None)

    model = tiny_model("predict")
    video = long(model)
    assert video.shape == (9, 4, H, W) and long_video.chunk_count(9, T, 2) == 4   # 1 + 3 + 2 + 2 + 2, cut to 9
    from svdcli.families.svd.inflate import is_temporal

    other = tiny_model("predict")                             # other temporal layers and mask convs
    for name, p in other.denoiser.net.named_parameters():
        if is_temporal(name) or name.startswith("context_convs."):
            p.add_(0.05 * torch.randn_like(p))
    other_video = long(other)
    assert (other_video[0] - video[0]).abs().max() < 1e-6                   # frame 0: the image model
    assert (other_video[1:] - video[1:]).abs().max() > 1e-2
    blind = long(model, w=0.0)                                              # context guidance 0: no context
    assert (blind[0] - video[0]).abs().max() < 1e-6 and (blind[1:] - video[1:]).abs().max() > 1e-2
    assert opts.family_options.context_frames == 2


@torch.no_grad()
def test_interpolation_keeps_its_keyframes_and_makes_4t_minus_3_frames():
    from svdcli.diffusion.schedules import karras_sigmas

    model = tiny_model("interpolate", **{"data.frames": 9})
    opts, sigmas = run_opts(), karras_sigmas(3)
    den = sampling.guided_denoiser(family_for("video_ldm"), model, opts, None)
    keys = inputs(5, seed=4)[0]                                         # 5 keyframes: windows of 3 sharing one
    out = long_video.interpolate_once(model, keys, text_inputs(1), opts, den, sigmas,
                                      torch.Generator().manual_seed(0), None)
    assert out.shape[0] == 4 * 5 - 3
    assert torch.equal(out[::4], keys)                                  # copied back, not computed
    between = out[1::4]
    assert (between - keys[:-1]).abs().max() > 0.1                      # new frames, not copies
    assert long_video.interpolation_windows(5, 3) == [(0, 3), (2, 5)]


def test_chunk_count_covers_the_length():
    assert long_video.chunk_count(4, 4, 2) == 1
    assert long_video.chunk_count(10, 4, 2) == 4                        # 4 + 2 + 2 + 2
    assert long_video.chunk_count(11, 4, 2) == 5


def test_recipes_name_the_family_and_validate():
    for stage in ("video", "predict", "interpolate"):
        cfg = config(stage, **({"data.frames": 5} if stage == "interpolate" else {}))
        assert cfg.family == "video_ldm" and cfg.stage == stage and cfg.family_config.freeze_spatial
    with pytest.raises(Exception, match="freeze_spatial"):
        config("video", freeze_spatial="false")
    with pytest.raises(Exception, match="multiple of interpolation_factor"):
        config("interpolate", **{"data.frames": 6})
    with pytest.raises(Exception, match="does not fit model tiny"):
        config("video", prediction="v")                                 # our image stage is EDM-trained
    with pytest.raises(Exception, match="x4 upscaler"):
        config("video", model="tiny_x4_upscaler")
