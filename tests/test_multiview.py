"""SVD-MV: the elevation in the vector conditioning, the multiview training stage, multi-view
sampling and the multi-view metrics; end to end from rendered orbits (render -> pack -> train ->
sample -> eval) when Blender is installed."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from numeric import assert_close_ulps
from random_weights import randomize_
from svdcli.errors import SvdError
from test_train_helpers import REPO, one_thread, run  # noqa: F401 - one_thread is an autouse fixture


def _unet_inputs(adm: int, frames: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, 8, 8, 8, generator=g)
    t = torch.full((frames,), 0.3)
    context = torch.randn(frames, 1, 40, generator=g)
    return x, t, context, torch.randn(frames, adm, generator=g)


def test_a_widened_unet_starts_as_the_image_to_video_model_and_then_hears_the_elevation():
    from svdcli.families.svd.config import unet_config
    from svdcli.families.svd.multiview import append_elevation, widen_vector_input
    from svdcli.models.unet import VideoUNet

    i2v = VideoUNet(unet_config("tiny")).eval()
    randomize_(i2v, seed=0)
    mv = VideoUNet(unet_config("tiny", "multiview")).eval()
    assert mv.cfg.adm_in_channels == 4 * i2v.cfg.adm_in_channels // 3
    state = i2v.state_dict()
    assert widen_vector_input(state, mv.cfg.adm_in_channels)
    mv.load_state_dict(state, strict=True)
    x, t, context, vector = _unet_inputs(i2v.cfg.adm_in_channels)
    dim = i2v.cfg.adm_in_channels // 3
    with torch.no_grad():
        want = i2v(x, t, context, vector, 2)
        for elevation in (-5.0, 30.0):
            got = mv(x, t, context, append_elevation(vector, elevation, dim), 2)
            assert_close_ulps(got, want, scale=float(want.abs().max()))
        # once trained, the elevation changes the output (seeded: an unseeded draw made this flaky)
        mv.label_emb[0][0].weight.data[:, -dim:].normal_(generator=torch.Generator().manual_seed(1))
        low = mv(x, t, context, append_elevation(vector, -5.0, dim), 2)
        high = mv(x, t, context, append_elevation(vector, 30.0, dim), 2)
    # far above float rounding: a thousandth of the output's magnitude (measured: 7e-3 of it)
    assert (low - high).abs().max() > 1e-3 * want.abs().max(), ((low - high).abs().max(), want.abs().max())


def test_elevation_embedding_refuses_clips_without_a_camera():
    from svdcli.families.svd.multiview import elevation_embedding

    emb = elevation_embedding(torch.tensor([10.0, 20.0]), 8)
    assert emb.shape == (2, 8) and not torch.equal(emb[0], emb[1])
    with pytest.raises(SvdError, match="svd render orbits"):
        elevation_embedding(torch.tensor([10.0, float("nan")]), 8)


def test_the_multiview_recipe_is_checked():
    from svdcli.train.config import ConfigError, load_config

    recipe = REPO / "pipelines/train/multiview.yaml"
    assert load_config(recipe, ["model=tiny"]).stage == "multiview"
    with pytest.raises(ConfigError, match="cond.mode must be i2v"):
        load_config(recipe, ["cond.mode=t2v"])
    with pytest.raises(ConfigError, match="lora.rank must be 0"):
        load_config(recipe, ["lora.rank=16"])


def test_a_fitted_tiny_vae_also_encodes_the_conditioning_frame(tmp_path):
    """`weights:` replaces the seeded tiny VAE for the conditioning-frame latent too (SVD's concat is
    the first stage's posterior mode): conditioned on a random encoder's projection of the input
    view, the tiny multiview model never learned to keep the object it was shown."""
    from svdcli.families.svd.config import SVDConfig, unet_config
    from svdcli.families.svd.encoders import build_encoders, tiny_encoders
    from svdcli.families.svd.formats import save_ours
    from svdcli.models.vae import VAEConfig, VideoAutoencoder

    torch.manual_seed(123)
    fitted = VideoAutoencoder(VAEConfig.tiny()).eval()
    save_ours(tmp_path / "vae.safetensors", {"vae": fitted.state_dict()}, vae_config=VAEConfig.tiny())
    enc = build_encoders(SVDConfig(model="tiny", weights=str(tmp_path / "vae.safetensors")), seed=0)
    frames = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected = fitted.encode(frames)
        assert_close_ulps(enc.vae.encode(frames), expected)
        assert_close_ulps(enc.encode_cond_frame(frames), expected)
        seeded = tiny_encoders(unet_config("tiny"), 0).encode_cond_frame(frames)
    assert (seeded - expected).abs().max() > 0.1 * expected.abs().max()


def _image(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_psnr_and_the_view_pairing(tmp_path):
    from svdcli.eval.multiview import find_pairs, psnr

    a = np.full((8, 8, 3), 100, np.uint8)
    b = a + np.uint8(10)                                             # MSE = (10/255)^2
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / 10), rel=1e-12)
    assert psnr(a, a) == pytest.approx(100.0)
    for k in range(3):
        _image(tmp_path / "gen" / "obj" / "views" / f"{k:03d}.png", a)
        _image(tmp_path / "ref" / "obj" / "views" / f"{k:03d}.png", b)
    pairs = find_pairs(tmp_path / "gen", tmp_path / "ref")
    assert [(p.object, p.view) for p in pairs] == [("obj", 1), ("obj", 2)]      # view 0 is the input
    assert len(find_pairs(tmp_path / "gen" / "obj", tmp_path / "ref" / "obj", include_input=True)) == 3
    _image(tmp_path / "ref" / "other" / "000.png", b)
    with pytest.raises(SvdError, match="other"):
        find_pairs(tmp_path / "gen", tmp_path / "ref")
    (tmp_path / "gen" / "obj" / "views" / "002.png").unlink()
    with pytest.raises(SvdError, match="2 generated views but 3"):
        find_pairs(tmp_path / "gen" / "obj", tmp_path / "ref" / "obj")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    """A tiny open_clip model config (.json path), so random-weight CLIP-S builds in a blink."""
    path = tmp_path_factory.mktemp("clip") / "svd-test-mv-clip.json"
    path.write_text(json.dumps({
        "embed_dim": 24,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    return str(path)


def test_metrics_rank_a_closer_view_better(tmp_path, tiny_clip):
    from svdcli.eval.multiview import MetricModels, evaluate, find_pairs

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    close = np.clip(truth.astype(int) + rng.integers(-8, 9, truth.shape), 0, 255).astype(np.uint8)
    far = rng.integers(0, 256, truth.shape, dtype=np.uint8)
    for k in range(3):
        _image(tmp_path / "truth" / f"{k:03d}.png", truth[k])
        _image(tmp_path / "close" / f"{k:03d}.png", close[k])
        _image(tmp_path / "far" / f"{k:03d}.png", far[k])
    models = MetricModels.load("random", tiny_clip, "random")
    near = evaluate(find_pairs(tmp_path / "close", tmp_path / "truth"), models)["mean"]
    away = evaluate(find_pairs(tmp_path / "far", tmp_path / "truth"), models)["mean"]
    same = evaluate(find_pairs(tmp_path / "truth", tmp_path / "truth"), models)["mean"]
    assert near["psnr"] > away["psnr"] and near["lpips"] < away["lpips"] and near["clip_s"] > away["clip_s"]
    assert same["psnr"] == pytest.approx(100.0) and same["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert same["clip_s"] == pytest.approx(1.0, abs=1e-5)


# --- end to end from rendered orbits ---------------------------------------------------------------
@pytest.fixture(scope="module")
def orbit_shards(tmp_path_factory):
    from render_helpers import blender_or_skip
    from svdcli.render.orbits import RenderSettings, render_orbits
    from svdcli.render.procedural import write_objects
    from svdcli.shards.pack import PackConfig, run_pack

    blender = blender_or_skip()
    folder = tmp_path_factory.mktemp("mv")
    write_objects(folder / "objects", 2, seed=0, kinds=("box", "torus"))
    settings = RenderSettings(views=4, resolution=64, samples=4, denoise=False)
    summary = render_orbits(folder / "objects", folder / "renders", settings, blender=blender)
    assert not summary.failed, summary.failed
    run_pack(folder / "renders" / "orbits.parquet", folder / "shards",
             PackConfig(size=(64, 64), frames=4, min_frames=4, format="npy", shard_size=1), workers=1,
             progress=False)
    return folder


def test_orbit_shards_carry_the_poses_and_the_loader_the_elevation(orbit_shards):
    from svdcli.shards.loader import make_loader

    renders = orbit_shards / "renders"
    elevations = {json.loads((p / "poses.json").read_text())["elevation_deg"]
                  for p in renders.iterdir() if (p / "poses.json").exists()}
    assert all(-5.0 <= e <= 30.0 for e in elevations) and len(elevations) == 2   # drawn per object
    loader = make_loader(orbit_shards / "shards", batch_size=2, num_frames=4, num_workers=0, shuffle=0)
    video, cond = next(iter(loader))
    assert video.shape == (2, 4, 3, 64, 64)
    assert set(cond["elevation_deg"].tolist()) == elevations


def test_render_pack_train_sample_eval_end_to_end(orbit_shards, tmp_path, tiny_clip):
    from svdcli.cli.main import app

    summary = run(tmp_path / "run", orbit_shards / "shards", stage="multiview", frames=4, steps=2)
    assert summary["stage"] == "multiview"
    runner = CliRunner()
    image = orbit_shards / "renders" / "obj_000_box" / "views" / "000.png"
    refused = runner.invoke(app, ["sample", "-c", str(tmp_path / "run"), "-i", str(image), "--multiview",
                                  "--out", str(tmp_path / "views"), "--steps", "2", "--no-progress"])
    assert refused.exit_code == 2 and "--elevation" in refused.output
    done = runner.invoke(app, ["sample", "-c", str(tmp_path / "run"), "-i", str(image), "--multiview",
                               "--elevation", "10", "--out", str(tmp_path / "views"), "--steps", "2",
                               "--no-progress"])
    assert done.exit_code == 0, done.output
    record = json.loads((tmp_path / "views" / "views.json").read_text())
    assert record["azimuth_from_input_deg"] == [0.0, 90.0, 180.0, 270.0] and record["elevation_deg"] == 10.0
    assert len(list((tmp_path / "views" / "views").glob("*.png"))) == 4
    assert (tmp_path / "views" / "turntable.mp4").stat().st_size > 0
    scored = runner.invoke(app, ["eval", "multiview", "--views", str(tmp_path / "views"),
                                 "--truth", str(orbit_shards / "renders" / "obj_000_box"),
                                 "--lpips-backbone", "random", "--clip-model", tiny_clip,
                                 "--clip-weights", "random", "--out", str(tmp_path / "scores.json")])
    assert scored.exit_code == 0, scored.output
    report = json.loads((tmp_path / "scores.json").read_text())
    assert [r["view"] for r in report["views"]] == [1, 2, 3] and report["mean"]["views"] == 3
    assert all(np.isfinite(r["psnr"]) and r["lpips"] >= 0 for r in report["views"])
