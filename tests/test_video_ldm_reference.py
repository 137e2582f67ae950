"""Video LDM against diffusers (issue 31, reference check b): over an SD 2.x image model, with
its temporal mixing off, the video model is SD's UNet in SD's own parameterisation at every
timestep of SD's schedule, and it trains on SD's objective (the eps- or v-MSE at uniform
timesteps). The same for the video upsampler over SD 2.x's x4 upscaler, whose low-resolution
input is noise-augmented as diffusers' StableDiffusionUpscalePipeline does it. Tiny random
diffusers models on the reference side (tests/sd_reference.py), written in SD's single-file
layout and read by the family's own `--init` path."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import sd_reference as ref
from svdcli.families import family_for
from test_train_helpers import one_thread  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
T, HW, CTX = 2, 16, 40   # frames per video, latent side (2x2 at the bottom: a 1x1 GroupNorm is degenerate), text width
SPREAD = torch.cat([torch.arange(0, 1000, 25), torch.tensor([1, 999])])   # the fast tests' 42 timesteps


def config(stage: str, model: str, prediction: str, **extra):
    from svdcli.train.config import load_config

    values = {"model": model, "prediction": prediction, "precision": "fp32", "activation_checkpointing": "false",
              "data.frames": T, "data.height": 64, "data.width": 64, "upsample.patch": 0, **extra}
    return load_config(REPO / f"pipelines/train/video_ldm/{stage}.yaml", [f"{k}={v}" for k, v in values.items()])


def tolerance(reference: torch.Tensor) -> torch.Tensor:
    """Per row: 256 float32 ulps of the row's largest value (a tiny UNet is ~60 layers deep)."""
    scale = reference.flatten(1).abs().amax(1)
    return 256 * torch.finfo(torch.float32).eps * scale


def assert_rows_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    err = (got - expected).flatten(1).abs().amax(1)
    bad = (err > tolerance(expected)).nonzero().flatten()
    assert not len(bad), f"{len(bad)} rows off, e.g. row {int(bad[0])}: error {float(err[bad[0]]):.3g}"


def x0_from(prediction: str, out: torch.Tensor, z: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The x0 a VP network's output means (diffusers' DDIMScheduler.step, eq. 12 of Song et al.)."""
    a = alpha_bar.reshape(-1, 1, 1, 1)
    if prediction == "eps":
        return (z - (1 - a).sqrt() * out) / a.sqrt()
    return a.sqrt() * z - (1 - a).sqrt() * out                 # v (Salimans & Ho 2022)


@pytest.fixture(scope="module")
def sd_file(tmp_path_factory):
    unet = ref.tiny_unet(0)
    return ref.write_sd_file(tmp_path_factory.mktemp("sd") / "sd.safetensors", unet, ref.tiny_vae(1)), unet


def videos_at(timesteps: torch.Tensor, seed: int = 0, channels: int = 4):
    """z_t (N T, C, h, w) with one video per timestep, its text (N T, L, D) and labels (N T,)."""
    g = torch.Generator().manual_seed(seed)
    n = len(timesteps)
    z = torch.randn(n * T, channels, HW, HW, generator=g)
    ctx = torch.randn(n, 5, CTX, generator=g).repeat_interleave(T, dim=0)
    return z, ctx, timesteps.repeat_interleave(T)


def sigma_of(alpha_bar: torch.Tensor) -> torch.Tensor:
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def check_sd_prediction(path, unet, prediction: str, timesteps: torch.Tensor) -> None:
    denoiser = family_for("video_ldm").build(config("video", "tiny_sd21", prediction), path).eval()
    alpha_bar = ref.sd_scheduler(prediction).alphas_cumprod                  # (1000,) diffusers' table
    z, ctx, t = videos_at(timesteps)
    a = alpha_bar[t]
    sigma = sigma_of(a)
    expected = x0_from(prediction, unet(z, t, ctx).sample, z, a)
    x = z * (1 + sigma**2).sqrt().reshape(-1, 1, 1, 1)                      # the sampler's x at that level
    assert_rows_close(denoiser(x, sigma, {"crossattn": ctx}, T), expected)   # as --init builds it

    # temporal layers made random: with their mixing off (alpha = 1) still SD's UNet, mixed in they act
    g = torch.Generator().manual_seed(5)
    for name, p in denoiser.net.unet.named_parameters():
        if any(k in name for k in ("time_stack", "time_mixer", "time_pos_embed")):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    rows = slice(0, 8 * T)                                                   # 8 videos are enough here
    x, sigma, cond, expected = x[rows], sigma[rows], {"crossattn": ctx[rows]}, expected[rows]
    assert_rows_close(denoiser(x, sigma, cond, T, torch.ones(8, T)), expected)
    assert (denoiser(x, sigma, cond, T) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("prediction", ["eps", "v"])
@torch.no_grad()
def test_video_ldm_on_sd_is_the_diffusers_unet_across_sds_schedule(sd_file, prediction):
    """Every 25th timestep and both ends; the slow test below takes all 1000."""
    check_sd_prediction(*sd_file, prediction, SPREAD)


@pytest.mark.slow
@pytest.mark.parametrize("prediction", ["eps", "v"])
@torch.no_grad()
def test_video_ldm_on_sd_is_the_diffusers_unet_at_every_timestep(sd_file, prediction):
    check_sd_prediction(*sd_file, prediction, torch.arange(1000))


def test_sd_scalings_label_and_scale_every_timestep_as_diffusers():
    """All 1000 levels of SD's table: the network sees timestep t, its input is z_t, and D is
    diffusers' x0 for any network output (exact formulas, float64)."""
    from svdcli.families.video_ldm.image_base import scaling
    from svdcli.train.config import load_config

    for prediction in ("eps", "v"):
        own = config("video", "tiny_sd21", prediction).family_config
        a = ref.sd_scheduler(prediction).alphas_cumprod.double()
        sigma = sigma_of(a).reshape(-1, 1)                                     # (1000, 1)
        skip, out, c_in, c_noise = scaling(own)(sigma)
        assert torch.equal(c_noise.flatten(), torch.arange(1000, dtype=torch.float64))
        z, f = torch.randn(1000, 1, dtype=torch.float64), torch.randn(1000, 1, dtype=torch.float64)
        x = z * (1 + sigma**2).sqrt()
        torch.testing.assert_close(c_in * x, z, rtol=1e-12, atol=0)
        torch.testing.assert_close(skip * x + out * f, x0_from(prediction, f[..., None, None], z[..., None, None],
                                                               a).reshape(-1, 1), rtol=1e-10, atol=1e-10)
    assert load_config  # the recipe loader is what config() uses


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_training_loss_is_sds_objective_at_sds_timesteps(sd_file, prediction):
    from svdcli.families.base import TrainBatch

    path, unet = sd_file
    family = family_for("video_ldm")
    cfg = config("video", "tiny_sd21", prediction)
    denoiser = family.build(cfg, path)
    sched = ref.sd_scheduler(prediction)
    gen = torch.Generator().manual_seed(1)
    sigma = family.training_sigmas(4000, cfg, gen)
    t = (sigma.double()[:, None] - sigma_of(sched.alphas_cumprod.double())[None]).abs().argmin(1)   # (4000,)
    # diffusers builds its table in float32 (a cumprod of 1000 terms): ours, in float64, is ~1e-5 away
    torch.testing.assert_close(sigma.double(), sigma_of(sched.alphas_cumprod.double())[t], rtol=5e-5, atol=0)
    assert torch.bincount(t // 250, minlength=4).min() > 800                   # uniform over t = 0..999

    b = 6
    sigma, t = sigma[:b], t[:b]
    x0, noise = torch.randn(b * T, 4, HW, HW, generator=gen), torch.randn(b * T, 4, HW, HW, generator=gen)
    ctx = torch.randn(b, 5, CTX, generator=gen).repeat_interleave(T, dim=0)
    loss = family.loss(denoiser, TrainBatch(x0, {"crossattn": ctx}, T), sigma, noise)   # (B,)
    tt = t.repeat_interleave(T)
    z = sched.add_noise(x0, noise, tt)
    target = noise if prediction == "eps" else sched.get_velocity(x0, noise, tt)
    with torch.no_grad():
        expected = ((unet(z, tt, ctx).sample - target) ** 2).reshape(b, -1).mean(1)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)


@torch.no_grad()
def test_upsampler_on_the_x4_upscaler_is_the_diffusers_unet_across_its_schedule(tmp_path):
    from diffusers import DDIMScheduler

    unet = ref.tiny_upscaler_unet(0)
    path = ref.write_sd_file(tmp_path / "x4.safetensors", unet, ref.tiny_vae(1, levels=3))
    denoiser = family_for("video_ldm").build(config("upsample", "tiny_x4_upscaler", "v"), path).eval()
    alpha_bar = DDIMScheduler(**ref.UPSCALER_SCHEDULE, prediction_type="v_prediction").alphas_cumprod
    z, ctx, t = videos_at(SPREAD, 1)
    g = torch.Generator().manual_seed(2)
    low = torch.randn(z.shape[0], 3, HW, HW, generator=g)                    # the (augmented) low-res frames
    level = torch.randint(0, 350, (len(SPREAD),), generator=g).repeat_interleave(T)
    a = alpha_bar[t]
    sigma = sigma_of(a)
    expected = x0_from("v", unet(torch.cat([z, low], 1), t, ctx, class_labels=level).sample, z, a)
    x = z * (1 + sigma**2).sqrt().reshape(-1, 1, 1, 1)
    got = denoiser(x, sigma, {"crossattn": ctx, "concat": low, "vector": level.float()}, T)
    assert_rows_close(got, expected)


def test_noise_augmentation_is_the_x4_pipelines():
    """c = low_res_scheduler.add_noise(x, eps, g), diffusers' StableDiffusionUpscalePipeline."""
    from diffusers import DDPMScheduler

    from svdcli.families.video_ldm.upsample import augment

    g = torch.Generator().manual_seed(3)
    low, eps = torch.rand(6, 3, 8, 8, generator=g) * 2 - 1, torch.randn(6, 3, 8, 8, generator=g)
    level = torch.tensor([0, 1, 20, 100, 349, 999])
    expected = DDPMScheduler(**ref.UPSCALER_SCHEDULE).add_noise(low, eps, level)
    torch.testing.assert_close(augment(low, level, eps), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model, diffusers_config, spatial, temporal", [
    ("sd21", dict(block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                  cross_attention_dim=1024, use_linear_projection=True), 865_910_724, 656_076_838),
    ("x4_upscaler", dict(ref.TINY_UPSCALER_UNET, block_out_channels=(256, 512, 512, 1024), attention_head_dim=8,
                         cross_attention_dim=1024, sample_size=128), 473_398_020, 437_853_990),
])
def test_full_size_presets_build_on_meta_with_the_image_models_spatial_layers(model, diffusers_config, spatial, temporal):
    """The full-size networks (docs/families.md's parameter table): the spatial part has exactly
    the parameter count of diffusers' SD 2.x UNet / x4 upscaler UNet; the temporal layers train."""
    from diffusers import UNet2DConditionModel

    from svdcli.families.svd.inflate import is_temporal
    from svdcli.families.video_ldm.config import VideoLDMConfig
    from svdcli.families.video_ldm.image_base import network_config
    from svdcli.models.unet import VideoUNet

    with torch.device("meta"):
        unet = VideoUNet(network_config(VideoLDMConfig(model=model)))
        reference = UNet2DConditionModel(**diffusers_config)
    counts = {"spatial": 0, "temporal": 0}
    for name, p in unet.named_parameters():
        counts["temporal" if is_temporal(name) else "spatial"] += p.numel()
    assert counts == {"spatial": spatial, "temporal": temporal}
    assert sum(p.numel() for p in reference.parameters()) == spatial


@torch.no_grad()
def test_video_ldm_over_sd_samples_what_diffusers_ddim_samples(sd_file):
    """`svd sample`'s loop for an SD model (SD's DDIM timesteps, Euler = DDIM eta 0, the VP latent
    at alpha_bar_0 at the end), text guidance 3, against diffusers' UNet + DDIMScheduler on the
    same frames, weights, noise and prompt embeddings: the fresh video model is SD, frame by frame."""
    from types import SimpleNamespace

    from svdcli.families.video_ldm import sampling
    from svdcli.families.video_ldm.config import VideoLDMOptions

    path, unet = sd_file
    cfg = config("video", "tiny_sd21", "v")
    denoiser = family_for("video_ldm").build(cfg, path).eval()
    model = SimpleNamespace(denoiser=denoiser, own=cfg.family_config)
    steps, g = 5, torch.Generator().manual_seed(4)
    z_T = torch.randn(T, 4, HW, HW, generator=g)
    text, empty = torch.randn(1, 5, CTX, generator=g), torch.randn(1, 5, CTX, generator=g)
    family = family_for("video_ldm")
    guided = sampling.guided_denoiser(family, model, SimpleNamespace(max_cfg=3.0, family_options=VideoLDMOptions()), None)
    got = sampling.generate(guided, z_T, sampling.sigmas(family, model, steps, "cpu"), {"crossattn": text},
                            {"crossattn": empty}, None, "euler", None)
    sched = ref.sd_scheduler("v")
    sched.set_timesteps(steps)
    z = z_T
    for t in sched.timesteps:
        u = unet(z, t, empty.expand(T, -1, -1)).sample
        c = unet(z, t, text.expand(T, -1, -1)).sample
        z = sched.step(u + 3.0 * (c - u), t, z).prev_sample
    torch.testing.assert_close(got, z, rtol=0, atol=float(1e-4 * z.abs().max()))
