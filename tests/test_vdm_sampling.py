"""VDM sampling: the family trains through `svd train --family vdm` and samples through
`svd sample` (plain, --extend, --upsample), and w_r = 0 reconstruction guidance is exactly
unconditional sampling with the same seed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.families import family_for
from svdcli.families.base import SamplingDefaults, TrainedRun
from svdcli.families.vdm.config import VDMConfig
from svdcli.families.vdm.sampling import VDMModel, build_denoiser
from svdcli.sample.pipeline import VideoPipeline
from svdcli.sample.options import SampleOptions
from svdcli.video.write import write_frames
from test_train_helpers import make_shards, one_thread  # noqa: F401

RECIPE = Path(__file__).resolve().parents[1] / "pipelines/train/vdm/video.yaml"
STEPS, FRAMES, SIZE = 4, 4, 32


def _random_model(size: int = 16, frames: int = 6, text: str = "none") -> VDMModel:
    from svdcli.families.vdm.text import build_text_tower

    family = family_for("vdm")
    own = VDMConfig(model="tiny", text=text)
    denoiser = build_denoiser(own, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in denoiser.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)   # the zero output conv too
    run = TrainedRun("vdm", "video", 0, frames, size, size, {})
    defaults = SamplingDefaults("vdm", frames, 8, 1.0, 1.0, size, size, trained_frames=frames, size_multiple=2,
                                sampler="ancestral")
    return VDMModel(family=family, defaults=defaults, kind="vdm", denoiser=denoiser.eval(),
                    text=build_text_tower(text, own.text_dim, 0), run=run)


def test_cfg_w_is_the_papers_guidance_with_w_minus_one():
    """--cfg W gives D_u + W (D_c - D_u), i.e. Ho et al.'s (1 + w) x_c - w x_u with w = W - 1,
    each branch the network's own prediction with the prompt's tokens or with none (zeros)."""
    model = _random_model(text="tiny")
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor(1.5)
    context = model.text(["a red ball rolls"]).float()                       # (1, L, D)
    with torch.no_grad():
        d_c = model.denoiser(x, sigma, {"context": context.expand(6, -1, -1)}, 6)
        d_u = model.denoiser(x, sigma, {"context": torch.zeros_like(context).expand(6, -1, -1)}, 6)
        assert float((d_c - d_u).abs().max()) > 1e-2                        # the prompt matters
        for cfg in (0.0, 1.0, 3.0, 7.5):
            opts = SampleOptions(min_cfg=cfg, max_cfg=cfg)
            got = model.family.guided_denoiser(model, opts, None)(x, sigma, cond={"context": context},
                                                                  uncond={"context": torch.zeros_like(context)})
            w = cfg - 1.0
            torch.testing.assert_close(got, (1 + w) * d_c - w * d_u, rtol=0, atol=1e-5 * float(d_c.abs().max()))


def test_zero_guidance_weight_is_unconditional_sampling_with_the_same_seed(tmp_path):
    """--upsample 2 with w_r = 0 is the plain 16x16 sample of that seed; w_r = 4 is not."""
    pipe = VideoPipeline(_random_model(), torch.device("cpu"), torch.float32)
    low = tmp_path / "low.mp4"
    write_frames(low, np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8), 8.0)
    quiet = dict(warn=lambda m: None)
    plain = pipe.generate(None, SampleOptions(seed=5, frames=6, width=16, height=16), **quiet).frames
    zero = pipe.generate(None, SampleOptions(seed=5, input=low, upsample=2, guidance_weight=0.0), **quiet).frames
    guided = pipe.generate(None, SampleOptions(seed=5, input=low, upsample=2, guidance_weight=4.0), **quiet).frames
    assert zero.shape == (6, 16, 16, 3) and plain.std() > 5            # not a blank video
    assert np.abs(zero.astype(int) - plain).max() <= 1  # uint8 rounding of float32 differences at the ulp level
    assert np.abs(guided.astype(int) - plain).max() > 10


def test_zero_guidance_weight_extension_is_the_replacement_method(tmp_path):
    """Eq. 7 corrects only x^b and z^a comes from q(z^a | x^a): w_r = 0 is replacement, exactly."""
    pipe = VideoPipeline(_random_model(), torch.device("cpu"), torch.float32)
    clip = tmp_path / "clip.mp4"
    write_frames(clip, np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8), 8.0)
    quiet = dict(warn=lambda m: None)
    run = lambda **kw: pipe.generate(None, SampleOptions(seed=5, input=clip, extend=3, **kw), **quiet).frames  # noqa: E731
    replaced, zero = run(conditioning="replacement"), run(guidance_weight=0.0)
    guided = run(guidance_weight=4.0)
    assert zero.shape == (8, 16, 16, 3)                              # 5 input frames + 3 new
    assert np.abs(zero.astype(int) - replaced).max() <= 1  # uint8 rounding of float32 differences at the ulp level
    assert np.abs(guided[5:].astype(int) - replaced[5:]).max() > 10


def _train(tmp_path: Path, *extra: str) -> Path:
    shards = make_shards(tmp_path / "data")
    run = tmp_path / "run"
    sets = [f"model=tiny", f"steps={STEPS}", "precision=fp32", "log_every=1", f"checkpoint_every={STEPS}",
            f"data.frames={FRAMES}", f"data.height={SIZE}", f"data.width={SIZE}", "data.batch_size=2",
            "data.num_workers=0", "data.shuffle_buffer=4", "optim.warmup_steps=0", "optim.lr=3e-3",
            "ema.decay=0.5", *extra]
    result = CliRunner().invoke(app, ["train", "--family", "vdm", "--stage", "video", "--config", str(RECIPE),
                                      "--data", str(shards), "--out", str(run), "--no-progress", "--no-tensorboard",
                                      *[a for kv in sets for a in ("--set", kv)]])
    assert result.exit_code == 0, result.output
    return run


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _watch_temporal_attention(monkeypatch) -> list:
    """Record the image indicator every training call of temporal attention gets, and check there
    that the images' outputs do not move when the video frames do (an image attends to itself)."""
    from svdcli.families.vdm.network import TemporalAttention

    seen, forward = [], TemporalAttention.forward

    def watched(self, x, frames, image_only_indicator=None):
        out = forward(self, x, frames, image_only_indicator)
        if self.training and torch.is_grad_enabled():
            seen.append(None if image_only_indicator is None else image_only_indicator.reshape(-1, frames).tolist())
            if image_only_indicator is not None:
                image = image_only_indicator.reshape(-1).bool()
                with torch.no_grad():
                    moved = x.detach().clone()
                    moved[~image] += torch.randn_like(moved[~image])
                    again = forward(self, moved, frames, image_only_indicator)
                torch.testing.assert_close(again[image], out.detach()[image], rtol=1e-5, atol=1e-5)
        return out

    monkeypatch.setattr(TemporalAttention, "forward", watched)
    return seen


def _guided_reference(model, prompt: str, cfg: float, steps: int, seed: int) -> np.ndarray:
    """The plain sample of `svd sample` written out: ancestral steps on D_u + cfg (D_c - D_u)."""
    from svdcli.diffusion.samplers import per_sample_noise, prior_sample, sample_ancestral
    from svdcli.families.vdm.sampling import step_generator
    from svdcli.sample.pipeline import frames_to_uint8

    net, t = model.denoiser, model.run.frames
    context = model.text([prompt]).float().expand(t, -1, -1)

    def guided(x, sigma):
        d_c = net(x, sigma, {"context": context}, t)
        d_u = net(x, sigma, {"context": torch.zeros_like(context)}, t)
        return d_u + cfg * (d_c - d_u)

    sigmas = net.schedule.sigmas(steps)
    noise = per_sample_noise([seed], (3, model.run.height, model.run.width), frames=t)
    with torch.no_grad():
        x = sample_ancestral(guided, prior_sample(noise, sigmas), sigmas, generator=step_generator(seed, 0))
    return frames_to_uint8(x.clamp(-1, 1))


def _pngs(folder: Path) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.png"))])


def test_vdm_trains_jointly_through_svd_train_and_samples_through_svd_sample(tmp_path, monkeypatch):
    seen = _watch_temporal_attention(monkeypatch)
    run = _train(tmp_path, "image_ratio=0.5", "text=tiny", "parameterisation=eps")
    # every training step's temporal attention saw 2 images after the 4 frames of each of the 2 videos
    assert len(seen) >= STEPS and all(s == [[0.0] * FRAMES + [1.0] * 2] * 2 for s in seen), seen[:2]
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == STEPS and all(np.isfinite(losses))
    family = family_for("vdm")
    export = run / "checkpoints" / f"step_{STEPS:06d}" / "ema.safetensors"
    from svdcli.train.config import load_config

    initial = family.build(load_config(RECIPE, [f"model=tiny", "text=tiny", "parameterisation=eps"])).state_dict()
    trained = family.saved_state(export)
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)

    runner, prompt, sampled = CliRunner(), "a pan number 1", {}
    for cfg in (1.0, 4.0):
        out = tmp_path / f"cfg{cfg:g}"
        result = runner.invoke(app, ["sample", "--checkpoint", str(run), "--steps", "3", "--out", str(out),
                                     "--format", "png", "--seed", "7", "--no-progress", "--prompt", prompt,
                                     "--cfg", f"{cfg:g}"])
        assert result.exit_code == 0, result.output
        assert f"vdm checkpoint (vdm): {FRAMES} frames {SIZE}x{SIZE}, 3 ancestral steps" in result.output
        sampled[cfg] = _pngs(out)
    from svdcli.families.base import read_header

    model = family.load(read_header(export))
    expected = _guided_reference(model, prompt, 4.0, steps=3, seed=7)
    assert sampled[4.0].shape == (FRAMES, SIZE, SIZE, 3)
    assert np.abs(sampled[4.0].astype(int) - expected).max() <= 1          # --cfg 4 is D_u + 4 (D_c - D_u)
    assert np.abs(sampled[4.0].astype(int) - sampled[1.0]).max() > 8     # ... which --cfg 1 is not
    plain = tmp_path / "plain.mp4"
    assert runner.invoke(app, ["sample", "--checkpoint", str(run), "--steps", "3", "--out", str(plain),
                               "--no-progress", "--prompt", prompt]).exit_code == 0
    out = plain

    for method in ("reconstruction", "replacement"):
        ext = tmp_path / f"{method}.mp4"
        result = runner.invoke(app, ["sample", "--checkpoint", str(run), "--steps", "3", "--out", str(ext),
                                     "--no-progress", "--input", str(out), "--extend", "5", "--conditioning", method,
                                     "--guidance-weight", "2"])
        assert result.exit_code == 0, result.output
        assert len(_frames(ext)) == FRAMES + 5                       # the input, then 5 new frames
    up = tmp_path / "up.mp4"
    result = runner.invoke(app, ["sample", "--checkpoint", str(run), "--steps", "3", "--out", str(up),
                                 "--no-progress", "--input", str(out), "--upsample", "2"])
    assert result.exit_code == 0, result.output
    assert _frames(up)[0].shape == (2 * SIZE, 2 * SIZE, 3) and len(_frames(up)) == FRAMES


def test_vdm_sampling_refuses_what_it_cannot_do(tmp_path):
    pipe = VideoPipeline(_random_model(), torch.device("cpu"), torch.float32)
    with pytest.raises(Exception, match="--input"):
        pipe.resolve(SampleOptions(extend=3))
    with pytest.raises(Exception, match="trained without text"):
        pipe.resolve(SampleOptions(prompt="a cat"))
    with pytest.raises(Exception, match="takes no --fps-id"):
        pipe.resolve(SampleOptions(fps_id=3))
    with pytest.raises(Exception, match="reconstruction or replacement"):
        clip = tmp_path / "c.mp4"
        write_frames(clip, np.zeros((2, 16, 16, 3), np.uint8), 8.0)
        pipe.resolve(SampleOptions(input=clip, extend=2, conditioning="inpaint"))


def _export(path: Path, overrides: dict, meta_drop: tuple[str, ...] = ()) -> Path:
    """A VDM export written by the family's own `save`, with random weights on every path."""
    from safetensors.torch import load_file, save_file
    from svdcli.train.config import config_from_dict

    family = family_for("vdm")
    cfg = config_from_dict({"family": "vdm", "stage": "video", "model": "tiny", "seed": 0,
                            "data": {"frames": 4, "height": 16, "width": 16}, **overrides})
    den = family.build(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in den.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    family.save(path, den.state_dict(), cfg, {"family": "vdm", "train_config": json.dumps(cfg.to_dict()), "step": "1"})
    if meta_drop:   # as files were written before the network config was saved
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = {k: v for k, v in f.metadata().items() if k not in meta_drop}
        save_file(load_file(str(path)), str(path), metadata=meta)
    return path


def test_a_checkpoint_is_rebuilt_from_the_network_config_it_saved(tmp_path, monkeypatch):
    """The resolved network config travels in the file: a preset that changes later (or a
    preset this install does not have) does not change what a checkpoint loads as; a file
    written before the config was saved still loads from its preset."""
    import svdcli.families.vdm.config as vdm_config
    from svdcli.families.base import read_header

    ckpt = _export(tmp_path / "vdm.safetensors", {"channels": 24})
    old = _export(tmp_path / "old.safetensors", {}, meta_drop=("net_config",))
    saved = json.loads(read_header(ckpt).metadata["net_config"])
    assert saved["channels"] == 24 and saved["mults"] == [1, 2] and saved["context_dim"] == 0

    def frames():
        pipe = VideoPipeline.from_checkpoint(ckpt, device="cpu", dtype="fp32")
        return pipe.generate(None, SampleOptions(seed=3, steps=3), warn=lambda m: None).frames

    before = frames()
    monkeypatch.setitem(vdm_config.PRESETS, "tiny", lambda: vdm_config.VDMNetConfig(channels=8, mults=(1, 2, 2)))
    np.testing.assert_array_equal(frames(), before)      # decoded from the same weights, same computation
    with pytest.raises(Exception, match="does not fit the VDM network its config describes"):
        VideoPipeline.from_checkpoint(old, device="cpu", dtype="fp32")   # read the (changed) preset, as before
    monkeypatch.undo()
    assert VideoPipeline.from_checkpoint(old, device="cpu", dtype="fp32").model.denoiser.net.cfg.channels == 16
