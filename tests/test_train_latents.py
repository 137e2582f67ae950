"""Training on precomputed latents (`data.latents: true`): the loader returns the latents of exactly
the frames it returns, a step gives the loss of on-the-fly encoding (posterior mode), and shards
without latents or with another VAE's latents are refused before training starts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from svdcli.errors import SvdError
from test_train_helpers import losses, make_shards, one_thread, run  # noqa: F401

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_latents")
    return {"tiny:0": make_shards(root / "seed0", clips=4, latents="tiny:0"),
            "tiny:1": make_shards(root / "seed1", clips=4, latents="tiny:1"),
            None: make_shards(root / "plain", clips=4)}


def test_loader_latents_follow_the_frame_window(data):
    from svdcli.models.config import UNetConfig
    from svdcli.models.vae import SCALE_FACTOR
    from svdcli.shards.loader import make_loader
    from svdcli.families.svd.encoders import tiny_encoders

    vae = tiny_encoders(UNetConfig.tiny(), 0).vae.eval()
    loader = make_loader(data["tiny:0"], batch_size=2, num_frames=2, stride=2, num_workers=0, seed=3, latents=True)
    starts = set()
    # windows are drawn per (seed, epoch, key) and keys come from temporary paths: several epochs
    # make sure windows at more than one offset are checked whatever the keys are
    for epoch in range(6):
        loader.set_epoch(epoch)
        for video, cond in loader:                               # video (B, T, C, H, W) in [-1, 1]
            b, t = video.shape[:2]
            assert cond["latents"].shape == (b, t, 4, 8, 8) and cond["latents"].dtype == torch.float16
            with torch.no_grad():
                want = SCALE_FACTOR * vae.encode(video.reshape(b * t, *video.shape[2:]))  # (B*T, 4, 8, 8)
            got = cond["latents"].reshape(b * t, 4, 8, 8).float()
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-3, atol=2e-3 * want.abs().max().item())
            assert cond["frame_stride"].tolist() == [2] * b
            starts.update(cond["frame_start"].tolist())
    assert len(starts) > 1  # windows start at frame 0 or 1: latents were taken at the same offsets


def test_step_on_stored_latents_matches_on_the_fly_encoding(data, tmp_path):
    run(tmp_path / "fly", data["tiny:0"], steps=2, **{"data.posterior": "mode"})
    run(tmp_path / "stored", data["tiny:0"], steps=2, **{"data.latents": "true"})
    fly, stored = losses(tmp_path / "fly"), losses(tmp_path / "stored")
    assert len(fly) == len(stored) == 2
    np.testing.assert_allclose(stored, fly, rtol=1e-3)
    # a run dir names the VAE it trained with: packing `--latents RUN_DIR` gives tiny:0's latents
    from svdcli.shards.latents import load_vae, vae_hash

    assert vae_hash(load_vae(str(tmp_path / "fly"))) == vae_hash(load_vae("tiny:0")) != vae_hash(load_vae("tiny:1"))


def test_missing_or_foreign_latents_are_refused(data, tmp_path):
    with pytest.raises(SvdError, match="holds no latents"):
        run(tmp_path / "a", data[None], steps=2, **{"data.latents": "true"})
    with pytest.raises(SvdError, match="another VAE"):
        run(tmp_path / "b", data["tiny:1"], steps=2, **{"data.latents": "true"})  # training seed 0 builds tiny:0
