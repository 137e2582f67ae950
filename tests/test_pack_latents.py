"""`svd pack --latents`: each sample stores the scaled posterior mode of exactly its stored frames,
tagged with the VAE's weights hash; another VAE makes another pack."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from svdcli.errors import SvdError
from svdcli.shards.frames import decode_npy
from svdcli.shards.pack import PackConfig, run_pack
from test_train_helpers import make_shards


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return make_shards(tmp_path_factory.mktemp("latents"), clips=4, latents="tiny:0")


def samples(out: Path) -> dict[str, dict[str, bytes]]:
    found: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                found.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return found


def test_stored_latents_are_the_scaled_mode_of_the_stored_frames(packed):
    from svdcli.models.config import UNetConfig
    from svdcli.models.vae import SCALE_FACTOR
    from svdcli.shards.latents import vae_hash
    from svdcli.families.svd.encoders import tiny_encoders

    vae = tiny_encoders(UNetConfig.tiny(), 0).vae.eval()  # the VAE `model: tiny, seed: 0` trains with
    found = samples(packed)
    assert len(found) == 4
    for key, sample in found.items():
        frames = decode_npy(sample["npy"])                      # (N, 64, 64, 3) uint8
        latents = decode_npy(sample["latents.npy"])
        assert latents.dtype == np.float16 and latents.shape == (len(frames), 4, 8, 8)
        with torch.no_grad():
            x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0
            want = (SCALE_FACTOR * vae.encode(x)).numpy()
        np.testing.assert_allclose(latents.astype(np.float32), want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
        meta = json.loads(sample["json"])["latents"]
        assert meta["source"] == "tiny:0" and meta["vae_hash"] == vae_hash(vae)
        assert meta["scale_factor"] == pytest.approx(SCALE_FACTOR) and meta["posterior"] == "mode"
    stats = json.loads((packed / "stats.json").read_text())
    assert stats["latents"]["vae_hash"] == vae_hash(vae)


def test_another_vae_is_another_pack_and_bad_sources_are_clear(packed):
    manifest = packed.parent / "clips.parquet"
    cfg = PackConfig(size=(64, 64), frames=4, min_frames=4, fps=8.0, shard_size=2, format="npy", latents="tiny:1")
    with pytest.raises(SvdError, match="other settings"):
        run_pack(manifest, packed, cfg, workers=1, progress=False)
    for source, message in (("tiny:x", "tiny:SEED"), (str(packed / "nope.safetensors"), "no such file")):
        cfg.latents = source
        with pytest.raises(SvdError, match=message):
            run_pack(manifest, packed.parent / "other", cfg, workers=1, progress=False)
