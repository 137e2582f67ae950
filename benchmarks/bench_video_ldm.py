"""Video LDM sampling cost on the tiny model (random weights, 128x128 frames, 16x16 latents, CPU):

  - seconds per generated frame of `--long` (the image model's first frame, then chunks of T = 4
    frames, S = 2 context frames, so each chunk after the first adds 2 frames) against one-shot
    sampling of the same length,
  - interpolation throughput: frames out per second, 5 keyframes -> 17 frames (one pass) and
    -> 65 (two passes), with a model trained on 5-frame clips (windows of 2 keyframes),
  - decoder-finetune step time (forward, backward, Adam) of the tiny VAE on one 8-frame 64x64
    clip: L1 only (the baseline), + LPIPS(vgg, random backbone: the same cost), + the temporal
    discriminator (after disc_start: adaptive weight, two more D passes),
  - over SD 2.x (tiny random diffusers models, tests/sd_reference.py's sizes): sampling 8 frames
    of the video model (tiny_sd21, v) and of the video upsampler (tiny_x4_upscaler, 16x16 ->
    64x64), text guidance 7.5, on SD's DDIM grid, against the baseline diffusers'
    UNet2DConditionModel + DDIMScheduler loop over the same 8 frames as a batch of images (the
    image model the temporal layers sit on: what the video model costs on top); and one training
    step (forward, backward, Adam on the temporal layers) of each against the image model's
    forward + backward alone.
Network time only (no VAE, no file I/O); euler, STEPS steps, text guidance off, context guidance
w = 1.5 (two branches per step) unless said. Best of REPEATS; ratios of runs interleaved in one process.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

STEPS, FRAMES, REPEATS = 6, 16, 2


def _model(stage: str, frames: int):
    import torch

    from svdcli.families import family_for
    from svdcli.train.config import load_config

    values = {"model": "tiny", "precision": "fp32", "activation_checkpointing": "false", "data.frames": frames,
              "data.height": 128, "data.width": 128}
    cfg = load_config(f"pipelines/train/video_ldm/{stage}.yaml", [f"{k}={v}" for k, v in values.items()])
    denoiser = family_for("video_ldm").build(cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in denoiser.parameters():
            if not p.abs().sum():
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return SimpleNamespace(denoiser=denoiser.eval(), own=cfg.family_config, defaults=SimpleNamespace(frames=frames))


def _inputs(frames: int):
    import torch

    text = torch.randn(1, 77, 40)
    cond = {"crossattn": text, "vector": torch.zeros(1, 24), "concat": torch.zeros(1, 4, 16, 16)}
    return SimpleNamespace(noise=torch.randn(frames, 4, 16, 16), cond=cond, uncond=cond)


def _best(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import torch

    from svdcli.diffusion.schedules import karras_sigmas
    from svdcli.families import family_for
    from svdcli.families.video_ldm import long_video, sampling
    from svdcli.families.video_ldm.config import VideoLDMOptions

    torch.set_num_threads(1)
    sigmas = karras_sigmas(STEPS)
    predict = _model("predict", 4)
    opts = SimpleNamespace(max_cfg=1.0, sampler="euler", seed=0, frames=FRAMES,
                           family_options=VideoLDMOptions(context_guidance=1.5, context_frames=2))
    den = sampling.guided_denoiser(family_for("video_ldm"), predict, opts, None)
    with torch.no_grad():
        long = _best(lambda: long_video.sample_long(predict, _inputs(4), opts, den, sigmas, None))
        one = _best(lambda: sampling.generate(den, torch.randn(FRAMES, 4, 16, 16), sigmas, _inputs(1).cond,
                                              _inputs(1).uncond, None, "euler", None))
    chunks = long_video.chunk_count(FRAMES, 4, 2)
    print(f"video_ldm --long {FRAMES} frames (1 image frame + {chunks} chunks of 4, S=2, w=1.5): "
          f"{long / FRAMES:.3f} s/frame; "
          f"one-shot {FRAMES} frames: {one / FRAMES:.3f} s/frame; long / one-shot x{long / one:.2f}")

    interp = _model("interpolate", 5)
    opts = SimpleNamespace(max_cfg=1.0, sampler="euler", seed=0, family_options=VideoLDMOptions())
    den = sampling.guided_denoiser(family_for("video_ldm"), interp, opts, None)
    keys = torch.randn(5, 4, 16, 16)
    for passes in (1, 2):
        def run():
            x = keys
            gen = torch.Generator().manual_seed(0)
            for _ in range(passes):
                x = long_video.interpolate_once(interp, x, _inputs(1), opts, den, sigmas, gen, None)
            return x

        with torch.no_grad():
            n = run().shape[0]
            seconds = _best(run)
        print(f"video_ldm interpolate x{4 ** passes}: 5 keyframes -> {n} frames in {seconds:.2f} s "
              f"({n / seconds:.1f} frames/s, {(n - 5) / seconds:.1f} new frames/s)")
    decoder_steps()
    over_sd()


def decoder_steps() -> None:
    import torch

    from svdcli.families.svd.config import unet_config
    from svdcli.families.svd.encoders import tiny_encoders
    from svdcli.families.video_ldm.config import DecoderConfig
    from svdcli.families.video_ldm.decoder import DecoderFinetune

    frames = torch.rand(8, 3, 64, 64) * 2 - 1
    eps = torch.randn(8, 4, 8, 8)
    times = {}
    for name, cfg, step in (("L1", DecoderConfig(perceptual_weight=0.0), 0),
                            ("L1+LPIPS", DecoderConfig(lpips_backbone="random"), 0),
                            ("L1+LPIPS+D", DecoderConfig(lpips_backbone="random", disc_start=0), 0)):
        model = DecoderFinetune(tiny_encoders(unet_config("tiny"), 0).vae, cfg)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)

        def one():
            loss = model(frames, eps, 8, step).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        one()  # warm-up
        times[name] = _best(one)
    base = times["L1"]
    print("video_ldm decoder finetune step (tiny VAE, 8x64x64): " +
          ", ".join(f"{k} {v:.3f} s (x{v / base:.2f})" for k, v in times.items()))


def over_sd() -> None:
    """Video LDM over tiny SD 2.x files (built by tests/sd_reference.py, as the reference tests
    build them) against diffusers' own image loop on the same weights."""
    import sys
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import sd_reference as ref

    tmp = Path(tempfile.mkdtemp())
    cases = (("tiny_sd21", "video", ref.tiny_unet(0), ref.tiny_vae(1), ref.SD_SCHEDULE),
             ("tiny_x4_upscaler", "upsample", ref.tiny_upscaler_unet(0), ref.tiny_vae(1, levels=3),
              ref.UPSCALER_SCHEDULE))
    for model, stage, unet, vae, schedule in cases:
        path = ref.write_sd_file(tmp / f"{model}.safetensors", unet, vae)
        ours, base = _sd_sampling(model, stage, path, unet, schedule)
        step, base_step = _sd_training(model, stage, path, unet)
        print(f"video_ldm over {model} ({FRAMES // 2} frames, 16x16 latents, {STEPS} DDIM steps, cfg 7.5): "
              f"sampling {ours:.2f} s vs diffusers UNet2DConditionModel+DDIMScheduler on the frames as images "
              f"{base:.2f} s (x{ours / base:.2f}); training step (temporal layers) {step:.2f} s vs the image "
              f"UNet's full fine-tuning step {base_step:.2f} s (x{step / base_step:.2f})")


def _sd_config(model: str, stage: str):
    from svdcli.train.config import load_config

    values = {"model": model, "precision": "fp32", "activation_checkpointing": "false", "data.frames": FRAMES // 2,
              "data.height": 64, "data.width": 64, "upsample.patch": 0}
    return load_config(f"pipelines/train/video_ldm/{stage}.yaml", [f"{k}={v}" for k, v in values.items()])


def _sd_inputs(stage: str):
    import torch

    g = torch.Generator().manual_seed(0)
    n = FRAMES // 2
    z, text = torch.randn(n, 4, 16, 16, generator=g), torch.randn(1, 77, 40, generator=g)
    extra = {"concat": torch.randn(n, 3, 16, 16, generator=g), "vector": torch.full((n,), 20.0)} if stage == "upsample" else {}
    return z, text, extra


def _sd_sampling(model: str, stage: str, path, unet, schedule) -> tuple[float, float]:
    import torch
    from diffusers import DDIMScheduler

    from svdcli.families import family_for
    from svdcli.families.video_ldm import sampling
    from svdcli.families.video_ldm.config import VideoLDMOptions
    from svdcli.families.video_ldm.image_base import schedule as vp_schedule

    cfg = _sd_config(model, stage)
    den = family_for("video_ldm").build(cfg, path).eval()
    opts = SimpleNamespace(max_cfg=7.5, family_options=VideoLDMOptions())
    guided = sampling.guided_denoiser(family_for("video_ldm"), SimpleNamespace(denoiser=den), opts, None)
    sigmas = vp_schedule(cfg.family_config).ddim_sigmas(STEPS)
    z, text, extra = _sd_inputs(stage)
    n = z.shape[0]
    cond, uncond = {"crossattn": text, **extra}, {"crossattn": torch.zeros_like(text), **extra}
    sched = DDIMScheduler(**{**schedule, "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1},
                          prediction_type="v_prediction")

    def diffusers_loop():
        sched.set_timesteps(STEPS)
        x = z.clone()
        ctx = torch.cat([torch.zeros_like(text), text]).repeat_interleave(n, dim=0)   # uncond half first
        for t in sched.timesteps:
            inp = torch.cat([x, x])
            if extra:
                inp = torch.cat([inp, extra["concat"].repeat(2, 1, 1, 1)], 1)
            labels = extra["vector"].repeat(2).long() if extra else None
            u, c = unet(inp, t, ctx, class_labels=labels).sample.chunk(2)
            x = sched.step(u + 7.5 * (c - u), t, x).prev_sample
        return x

    with torch.no_grad():
        ours = _best(lambda: sampling.generate(guided, z, sigmas, cond, uncond, None, "euler", None))
        base = _best(diffusers_loop)
    return ours, base


def _sd_training(model: str, stage: str, path, unet) -> tuple[float, float]:
    import torch

    from svdcli.families import family_for
    from svdcli.families.base import TrainBatch

    family, cfg = family_for("video_ldm"), _sd_config(model, stage)
    den = family.build(cfg, path)
    opt = torch.optim.Adam([p for p in den.parameters() if p.requires_grad], lr=1e-5)
    z, text, extra = _sd_inputs(stage)
    n, g = z.shape[0], torch.Generator().manual_seed(1)
    batch = TrainBatch(z, {"crossattn": text.expand(n, -1, -1), **extra}, n)
    sigma, noise = family.training_sigmas(1, cfg, g), torch.randn(z.shape, generator=g)
    base_unet = type(unet)(**unet.config).train()
    base_opt = torch.optim.Adam(base_unet.parameters(), lr=1e-5)
    t = torch.full((n,), 500)

    def ours():
        loss = family.loss(den, batch, sigma, noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def diffusers_step():
        inp = torch.cat([z, extra["concat"]], 1) if extra else z
        labels = extra["vector"].long() if extra else None
        loss = (base_unet(inp, t, text.expand(n, -1, -1), class_labels=labels).sample - noise).pow(2).mean()
        base_opt.zero_grad()
        loss.backward()
        base_opt.step()

    ours(), diffusers_step()                       # warm-up
    return _best(ours), _best(diffusers_step)


if __name__ == "__main__":
    main()
