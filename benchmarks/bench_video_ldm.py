"""Video LDM sampling cost on the tiny model (random weights, 64x64 frames, 8x8 latents, CPU):

  - seconds per generated frame of `--long` (chunks of T = 4 frames, S = 2 context frames, so
    each chunk after the first adds 2 frames) against one-shot sampling of the same length,
  - interpolation throughput: frames out per second, 5 keyframes -> 17 frames (one pass) and
    -> 65 (two passes), with a model trained on 5-frame clips (windows of 2 keyframes),
  - decoder-finetune step time (forward, backward, Adam) of the tiny VAE on one 8-frame 64x64
    clip: L1 only (the baseline), + LPIPS(vgg, random backbone: the same cost), + the temporal
    discriminator (after disc_start: adaptive weight, two more D passes).
Network time only (no VAE, no file I/O); euler, STEPS steps, text guidance off, context guidance
w = 1.5 (two branches per step). Best of REPEATS.
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
              "data.height": 64, "data.width": 64}
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
    cond = {"crossattn": text, "vector": torch.zeros(1, 24), "concat": torch.zeros(1, 4, 8, 8)}
    return SimpleNamespace(noise=torch.randn(frames, 4, 8, 8), cond=cond, uncond=cond)


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
    from svdcli.families.video_ldm import sampling

    torch.set_num_threads(1)
    sigmas = karras_sigmas(STEPS)
    predict = _model("predict", 4)
    opts = SimpleNamespace(max_cfg=1.0, sampler="euler", seed=0, frames=FRAMES,
                           family_options={"context_guidance": 1.5, "context_frames": 2})
    den = sampling.guided_denoiser(predict, opts, None)
    with torch.no_grad():
        long = _best(lambda: sampling.sample_long(predict, _inputs(4), opts, den, sigmas, None))
        one = _best(lambda: sampling._generate(den, torch.randn(FRAMES, 4, 8, 8), sigmas, _inputs(1).cond,
                                               _inputs(1).uncond, None, "euler", None))
    chunks = sampling.chunk_count(FRAMES, 4, 2)
    print(f"video_ldm --long {FRAMES} frames ({chunks} chunks of 4, S=2, w=1.5): {long / FRAMES:.3f} s/frame; "
          f"one-shot {FRAMES} frames: {one / FRAMES:.3f} s/frame; long / one-shot x{long / one:.2f}")

    interp = _model("interpolate", 5)
    opts = SimpleNamespace(max_cfg=1.0, sampler="euler", seed=0, family_options={"context_guidance": 1.0})
    den = sampling.guided_denoiser(interp, opts, None)
    keys = torch.randn(5, 4, 8, 8)
    for passes in (1, 2):
        def run():
            x = keys
            gen = torch.Generator().manual_seed(0)
            for _ in range(passes):
                x = sampling.interpolate_once(interp, x, _inputs(1), opts, den, sigmas, gen, None)
            return x

        with torch.no_grad():
            n = run().shape[0]
            seconds = _best(run)
        print(f"video_ldm interpolate x{4 ** passes}: 5 keyframes -> {n} frames in {seconds:.2f} s "
              f"({n / seconds:.1f} frames/s, {(n - 5) / seconds:.1f} new frames/s)")
    decoder_steps()


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


if __name__ == "__main__":
    main()
