"""`svd train --plan` prints a plan and trains nothing; on a GPU, `svd train` refuses a run whose plan
does not fit the GPU, with the numbers and the cheapest change that fits, unless --force."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from svdcli.cli.main import app
from test_train_helpers import REPO, make_shards, one_thread, tiny_overrides  # noqa: F401

VIDEO = str(REPO / "pipelines/train/video.yaml")


def _sets(**extra) -> list[str]:
    return [a for kv in tiny_overrides(frames=2, steps=1, **extra) for a in ("--set", kv)]


EXTRA = {"activation_checkpointing": "true", "data.latents": "true"}   # both tests: traces are cached


def test_plan_prints_the_split_and_what_fits_and_trains_nothing(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--stage", "video", "--config", VIDEO, "--plan", "--gpus", "2",
                                      "--out", str(out), *_sets(**EXTRA)])
    assert result.exit_code == 0, result.output
    text = result.output
    for row in ("parameters", "gradients", "optimizer states", "EMA", "activations", "frozen encoders", "total"):
        assert re.search(rf"^  {row}\s+[\d.]+\s+[\d.]+\s+[\d.]+$", text, re.M), f"no {row} row in:\n{text}"
    assert "with activation checkpointing" in text and "without activation checkpointing" in text
    assert re.search(r"FLOPs per optimizer step and GPU: [\d.]+ TFLOP model", text)
    assert "fits: 24 GiB yes" in text and "on 2 GPU(s)" in text
    assert not out.exists()                                   # nothing trained, nothing written


def test_data_and_out_are_required_without_plan(tmp_path):
    result = CliRunner().invoke(app, ["train", "--stage", "video", "--config", VIDEO, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--data is required (except with --plan)" in result.output


@pytest.fixture(scope="module")
def latent_shards(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("plan_data"), clips=4, frames=2, latents="tiny:0")


def test_a_run_that_cannot_fit_the_gpu_is_refused_with_the_cheapest_change(latent_shards, tmp_path, monkeypatch):
    """A GPU just too small for AdamW but big enough with 8-bit AdamW (the first change that
    applies to this config): refused, naming both numbers and the change; --force trains."""
    import svdcli.train.plan.check as check
    from svdcli.train.config import load_config
    from svdcli.train.plan.plan import RESERVED_GIB, USABLE_FRACTION, make_plan

    extra = EXTRA
    cfg = load_config(VIDEO, tiny_overrides(frames=2, steps=1, **extra))
    adamw = make_plan(cfg, {}, 1).peak
    small = make_plan(load_config(VIDEO, tiny_overrides(frames=2, steps=1, **extra, **{"optim.name": "adamw8bit"})),
                      {}, 1).peak
    assert small < adamw
    memory = ((adamw + small) / 2 / 2**30 + RESERVED_GIB) / USABLE_FRACTION   # usable: between the two
    monkeypatch.setattr(check, "visible_gpu", lambda local_rank: ("Test GPU (cuda:0)", memory))

    args = ["train", "--stage", "video", "--config", VIDEO, "--data", str(latent_shards), "--no-progress",
            "--no-tensorboard", *_sets(**extra)]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.output.split())
    assert f"needs {adamw / 2**30:.1f} GiB per GPU" in message and "Test GPU (cuda:0)" in message
    assert "cheapest change that fits: --set optim.name=adamw8bit" in message and "--force" in message
    assert not (tmp_path / "refused").exists()                # refused before anything was written

    forced = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "forced"), "--force"])
    assert forced.exit_code == 0, forced.output
    assert (tmp_path / "forced" / "summary.json").exists()


def test_cpu_runs_are_never_refused():
    from svdcli.train.plan.check import check_fits

    class Info:                                               # what setup_env reports without a GPU
        rank, world_size, local_rank, device = 0, 1, 0, "cpu"

    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    check_fits(object(), {}, Info())                          # returns before reading the config at all
