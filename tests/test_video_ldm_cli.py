"""Video LDM through the CLI: `svd train --family video_ldm` for each stage, then `svd sample`
one-shot, `--long` and `--interpolate`; the spatial layers come out of training bit-identical."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.families import family_for
from test_train_helpers import REPO, make_shards, one_thread, tiny_overrides  # noqa: F401

STEPS = 3


def train(tmp: Path, stage: str, shards: Path, frames: int, *extra: str) -> Path:
    out = tmp / stage
    sets = [a for kv in tiny_overrides(frames=frames, steps=STEPS, checkpoint_every=STEPS,
                                       **{"optim.lr": 1e-2, "ema.enabled": "false"}) for a in ("--set", kv)]
    result = CliRunner().invoke(app, ["train", "--family", "video_ldm", "--stage", stage, "--config",
                                      str(REPO / f"pipelines/train/video_ldm/{stage}.yaml"), "--data", str(shards),
                                      "--out", str(out), "--no-progress", "--no-tensorboard", *sets, *extra])
    assert result.exit_code == 0, result.output
    return out


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
    result, frames = sample(tmp, predict, "long", "--prompt", "a pan number 1", "--long", "--frames", "10",
                            "--context-frames", "2", "--context-guidance", "1.5")
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
    assert result.exit_code != 0 and "prediction model" in result.output
    result, _ = sample(tmp, predict, "bad2", "--prompt", "x", "--interpolate", "3", "--input", "k.mp4")
    assert result.exit_code != 0 and "interpolation model" in result.output
    result, _ = sample(tmp, video, "bad3", "--prompt", "x", "--fps-id", "3")
    assert result.exit_code != 0 and "takes no --fps-id" in result.output
