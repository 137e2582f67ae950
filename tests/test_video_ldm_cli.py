"""Video LDM through the CLI: `svd train --family video_ldm` for each stage, over our image
stage and over (tiny) SD 2.x files, then `svd sample` one-shot, `--long`, `--interpolate` and
`--upsample`; the spatial layers come out of training bit-identical."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.families import family_for
from test_train_helpers import REPO, make_shards, one_thread, tiny_overrides  # noqa: F401

STEPS = 3


def train(tmp: Path, stage: str, shards: Path, frames: int, *extra: str, name: str | None = None, **values) -> Path:
    out = tmp / (name or stage)
    sets = [a for kv in tiny_overrides(frames=frames, steps=STEPS, checkpoint_every=STEPS,
                                       **{"optim.lr": 1e-2, "ema.enabled": "false", **values}) for a in ("--set", kv)]
    result = CliRunner().invoke(app, ["train", "--family", "video_ldm", "--stage", stage, "--config",
                                      str(REPO / f"pipelines/train/video_ldm/{stage}.yaml"), "--data", str(shards),
                                      "--out", str(out), "--no-progress", "--no-tensorboard", *sets, *extra])
    assert result.exit_code == 0, result.output
    return out


def said(result) -> str:
    """The command's output with the console's line wrapping undone."""
    return " ".join(result.output.split())


def export(run: Path) -> Path:
    return run / "checkpoints" / f"step_{STEPS:06d}" / "ema.safetensors"


def sample(tmp: Path, run: Path, name: str, *args: str):
    import av

    out = tmp / f"{name}.mp4"
    result = CliRunner().invoke(app, ["sample", "--checkpoint", str(run), "--steps", "2", "--out", str(out),
                                      "--no-progress", *args])
    if result.exit_code:
        return result, None
    with av.open(str(out)) as container:
        return result, [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vldm")
    shards4, shards5 = make_shards(tmp / "d4", frames=4), make_shards(tmp / "d5", frames=5)
    from svdcli.families.svd.tiny import write_tiny_checkpoint

    image_model = write_tiny_checkpoint(tmp / "image.safetensors")   # spatial layers with a non-zero output
    video = train(tmp, "video", shards4, 4, "--init", str(image_model))
    predict = train(tmp, "predict", shards4, 4, "--init", str(export(video)))
    interpolate = train(tmp, "interpolate", shards5, 5, "--init", str(export(video)))
    return tmp, video, predict, interpolate


@pytest.fixture(scope="module")
def sd_runs(tmp_path_factory):
    """Over tiny SD 2.x files (tests/sd_reference.py): a v-prediction text-to-video model and the
    x4 upscaler's video upsampler, trained on whole 64x64 frames (16x16 upsampler latents)."""
    import sd_reference as ref

    tmp = tmp_path_factory.mktemp("vldm_sd")
    shards = make_shards(tmp / "d4", frames=4)
    sd = ref.write_sd_file(tmp / "sd.safetensors", ref.tiny_unet(0), ref.tiny_vae(1))
    x4 = ref.write_sd_file(tmp / "x4.safetensors", ref.tiny_upscaler_unet(0), ref.tiny_vae(1, levels=3))
    video = train(tmp, "video", shards, 4, "--init", str(sd), model="tiny_sd21")
    upsample = train(tmp, "upsample", shards, 4, "--init", str(x4), model="tiny_x4_upscaler", **{"upsample.patch": 0})
    return tmp, sd, video, upsample


def test_video_training_changes_only_the_temporal_layers(runs):
    from svdcli.families.svd.inflate import is_temporal
    from svdcli.train.config import load_config

    tmp, video, predict, _ = runs
    family = family_for("video_ldm")
    cfg = load_config(REPO / "pipelines/train/video_ldm/video.yaml", tiny_overrides(frames=4))
    initial = family.build(cfg, tmp / "image.safetensors").state_dict()
    trained = family.saved_state(export(video))
    assert trained.keys() == initial.keys()
    spatial = [k for k in initial if k.startswith("net.unet.") and not is_temporal(k[len("net.unet."):])]
    temporal = [k for k in initial if k.startswith("net.unet.") and is_temporal(k[len("net.unet."):])]
    assert spatial and all(torch.equal(trained[k], initial[k]) for k in spatial)
    assert any(not torch.equal(trained[k], initial[k]) for k in temporal)
    convs = [k for k in initial if k.startswith("net.context_convs.")]
    assert all(torch.equal(trained[k], initial[k]) for k in convs)          # no mask in the video stage
    after = family.saved_state(export(predict))                             # predict: from the video model
    assert all(torch.equal(after[k], trained[k]) for k in spatial)
    assert any(not torch.equal(after[k], trained[k]) for k in convs)        # the mask convs train


def test_sample_one_shot_long_and_interpolated(runs):
    tmp, video, predict, interpolate = runs
    result, frames = sample(tmp, video, "oneshot", "--prompt", "a pan number 1")
    assert result.exit_code == 0, result.output
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    # 128x128: the image model's first frame alone needs 2x2 latents at the tiny UNet's bottom
    result, frames = sample(tmp, predict, "long", "--prompt", "a pan number 1", "--long", "--frames", "10",
                            "--context-frames", "2", "--context-guidance", "1.5", "--width", "128", "--height", "128")
    assert result.exit_code == 0, result.output
    assert len(frames) == 10

    from svdcli.video.synth import Shot, render_shot, write_frames

    keys = write_frames(tmp / "keys.mp4", render_shot(Shot(2, seed=1, speed=(2.0, 1.0)), 64, 64), 2.0)
    result, frames = sample(tmp, interpolate, "interp", "--interpolate", "4", "--input", str(keys))
    assert result.exit_code == 0, result.output
    assert len(frames) == 4 * 2 - 3
    result, frames = sample(tmp, interpolate, "interp16", "--interpolate", "16", "--input", str(keys))
    assert result.exit_code == 0, result.output
    assert len(frames) == 4 * (4 * 2 - 3) - 3                               # two passes


def test_long_and_interpolate_need_their_models(runs):
    tmp, video, predict, _ = runs
    result, _ = sample(tmp, video, "bad", "--prompt", "x", "--long", "--frames", "10")
    assert result.exit_code != 0 and "prediction model" in said(result)
    result, _ = sample(tmp, predict, "bad2", "--prompt", "x", "--interpolate", "3", "--input", "k.mp4")
    assert result.exit_code != 0 and "interpolation model" in said(result)
    result, _ = sample(tmp, video, "bad3", "--prompt", "x", "--decode-chunk", "3")
    assert result.exit_code != 0 and "takes no --decode-chunk" in said(result)
    result, _ = sample(tmp, video, "bad4", "--prompt", "x", "--upsample", "4", "--input", "k.mp4")
    assert result.exit_code != 0 and "video upsampler" in said(result)


def test_sd_video_model_trains_temporal_layers_only_and_samples(sd_runs):
    from svdcli.families.svd.inflate import is_temporal

    tmp, sd, video, _ = sd_runs
    trained = family_for("video_ldm").saved_state(export(video))
    with safe_open(str(sd), framework="pt") as f:                              # SD's own tensors, untouched
        spatial = [k for k in trained if k.startswith("net.unet.") and not is_temporal(k)]
        assert spatial and all(torch.equal(trained[k], f.get_tensor("model.diffusion_model." + k[len("net.unet."):]))
                               for k in spatial)
    assert any(trained[k].abs().sum() > 0 for k in trained if ".time_stack." in k and "out_layers.3" in k)
    result, frames = sample(tmp, video, "sd", "--prompt", "a pan number 1", "--cfg", "3")
    assert result.exit_code == 0, result.output
    assert len(frames) == 4 and frames[0].shape == (64, 64, 3)
    result, _ = sample(tmp, video, "sd_bad", "--prompt", "x", "--fps-id", "3")
    assert result.exit_code != 0 and "no micro-conditioning" in said(result)


def test_sd_file_into_our_layout_is_refused(sd_runs, tmp_path):
    tmp, sd, _, _ = sd_runs
    shards = tmp / "d4" / "shards"
    out = tmp_path / "wrong"
    result = CliRunner().invoke(app, ["train", "--family", "video_ldm", "--stage", "video", "--config",
                                      str(REPO / "pipelines/train/video_ldm/video.yaml"), "--data", str(shards),
                                      "--out", str(out), "--no-progress", "--no-tensorboard", "--init", str(sd),
                                      *[a for kv in tiny_overrides(frames=4) for a in ("--set", kv)]])
    assert result.exit_code == 2 and "is an SD 2.x file: set model: sd21" in said(result), result.output


def test_upsampler_trains_and_upsamples_a_video_4x(sd_runs):
    from svdcli.video.synth import Shot, render_shot, write_frames

    tmp, _, _, upsample = sd_runs
    low = write_frames(tmp / "low.mp4", render_shot(Shot(6, seed=1, speed=(2.0, 1.0)), 16, 24), 4.0)
    result, frames = sample(tmp, upsample, "up", "--upsample", "4", "--input", str(low), "--noise-level", "30")
    assert result.exit_code == 0, result.output
    assert len(frames) == 6 and frames[0].shape == (64, 96, 3)              # every input frame, 4x per side
    result, _ = sample(tmp, upsample, "up_bad", "--upsample", "4", "--input", str(low), "--noise-level", "350")
    assert result.exit_code != 0 and "trained on levels 0 to 349" in said(result)
    result, _ = sample(tmp, upsample, "up_bad2", "--upsample", "2", "--input", str(low))
    assert result.exit_code != 0 and "the factor is 4" in said(result)
    result, _ = sample(tmp, upsample, "up_bad3", "--prompt", "x")
    assert result.exit_code != 0 and "--upsample 4 --input low.mp4" in said(result)
