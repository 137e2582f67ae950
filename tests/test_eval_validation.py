"""The training validation curve: held-out shards at fixed noise levels, logged beside the training
loss; the same weights give the same validation loss, and the levels follow the family's noise."""
from __future__ import annotations

import json
import math
from statistics import NormalDist

import pytest

from numeric import assert_close_ulps
from test_train_helpers import make_shards, one_thread, run  # noqa: F401


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("val"), clips=4, frames=2)


def test_validation_loss_is_logged_every_n_steps_and_repeatable(shards, tmp_path):
    summary = run(tmp_path / "run", shards, steps=4, **{"validation.data": shards, "validation.every": 2,
                                                       "validation.batches": 2, "validation.levels": 3})
    assert summary["steps"] == 4
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    val = [line for line in lines if "val_loss" in line]
    assert [line["step"] for line in val] == [2, 4]
    for line in val:
        assert math.isfinite(line["val_loss"]) and len(line["val_loss_by_sigma"]) == 3
        assert_close_ulps(line["val_loss"], sum(line["val_loss_by_sigma"].values()) / 3, scale=line["val_loss"], ulps=64)
    assert "loss" in next(line for line in lines if line.get("step") == 2 and "loss" in line)


def test_same_weights_same_validation_loss_and_family_levels(shards):
    import torch

    from svdcli.families import family_for
    from svdcli.train.config import load_config
    from svdcli.train.validation import Validator, noise_levels
    from test_train_helpers import REPO, tiny_overrides

    cfg = load_config(REPO / "pipelines/train/video.yaml", tiny_overrides() + [f"validation.data={shards}",
                                                                               "validation.batches=1", "validation.levels=4"])
    family = family_for(cfg.family)
    levels = noise_levels(family, cfg)
    # EDM training noise: ln sigma ~ N(P_mean, P_std^2); the levels are its quantiles at (k + 1/2) / 4
    for k, level in enumerate(levels.tolist()):
        z = NormalDist().inv_cdf((k + 0.5) / 4)
        assert abs(math.log(level) - (cfg.noise.p_mean + cfg.noise.p_std * z)) < 0.1
    torch.manual_seed(0)
    denoiser = family.build(cfg)
    urls = sorted(str(p) for p in shards.glob("*.tar"))
    validator = Validator(cfg, family, family.encoders(cfg, "cpu"), "cpu", urls)
    first, second = validator.run(denoiser, 1), validator.run(denoiser, 2)
    assert denoiser.training                                   # back in training mode afterwards
    assert_close_ulps(second["val_loss"], first["val_loss"], scale=first["val_loss"])
    with pytest.raises(Exception, match="fewer than validation.batches 50"):
        cfg.validation.batches = 50
        Validator(cfg, family, None, "cpu", urls)
