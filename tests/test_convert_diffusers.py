"""`svd convert --to diffusers` writes a folder diffusers' StableVideoDiffusionPipeline loads, whose
image encoder embeds like our conditioner, and which converts back to ours unchanged."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.families.svd import formats as ck

runner = CliRunner()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny checkpoint of ours (with a conditioner), converted to a diffusers folder."""
    from svdcli.families.svd.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("convert")
    src = write_tiny_checkpoint(root / "tiny.safetensors")
    out = root / "tiny_diffusers"
    result = runner.invoke(app, ["convert", str(src), "--to", "diffusers", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return src, out, result.output


def test_pipeline_loads_the_folder(converted):
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline

    _, out, output = converted
    assert "conditioner not written" not in output and "unet, vae, conditioner" in output
    pipe = StableVideoDiffusionPipeline.from_pretrained(str(out))
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    sched = pipe.scheduler.config
    assert sched.prediction_type == "v_prediction" and sched.use_karras_sigmas
    assert (sched.sigma_min, sched.sigma_max, sched.timestep_type) == (0.002, 700.0, "continuous")
    pipe.scheduler.set_timesteps(4)
    assert pipe.scheduler.sigmas[0].item() == pytest.approx(700.0, rel=1e-4)
    assert pipe.feature_extractor.image_mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    assert pipe.image_encoder.config.projection_dim == 40     # the tiny tower's embedding width


def test_image_encoder_embeds_like_our_conditioner(converted):
    from diffusers import StableVideoDiffusionPipeline

    from svdcli.sample.pipeline import load_model

    src, out, _ = converted
    ours = load_model(src).encode.conditioner.image_embedder
    theirs = StableVideoDiffusionPipeline.from_pretrained(str(out)).image_encoder.eval()
    image = torch.rand(2, 3, 48, 80, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x = ours.preprocess(image)                                 # (2, 3, 32, 32)
    with torch.no_grad():
        expected = ours.open_clip.model.visual(x)              # (2, 40)
        got = theirs(x).image_embeds
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() < 1e-4


def test_folder_converts_back_to_ours_unchanged(converted, tmp_path):
    from svdcli.families.svd.conditioner_diffusers import FRAME_VAE, IMAGE_TOWER

    src, out, output = converted
    back = tmp_path / "back.safetensors"
    result = runner.invoke(app, ["convert", str(out), "--to", "ours", "--out", str(back)])
    assert result.exit_code == 0, result.output
    before, after = ck.load_checkpoint(src), ck.load_checkpoint(back)
    assert after.config == before.config
    for part in ("unet", "vae"):
        assert before.parts[part].keys() == after.parts[part].keys()
        assert all(torch.equal(before.parts[part][k], after.parts[part][k]) for k in before.parts[part])
    tower = [k for k in before.parts["conditioner"] if k.startswith(IMAGE_TOWER)]
    assert tower and all(torch.equal(before.parts["conditioner"][k], after.parts["conditioner"][k]) for k in tower)
    # the tiny conditioner's own frame VAE is random, not the model VAE: the user is told it is lost
    assert "frame VAE differs from the model VAE" in output
    assert any(k.startswith(FRAME_VAE) for k in after.parts["conditioner"])


def test_without_a_conditioner_only_unet_and_vae_are_written(tmp_path):
    from safetensors.torch import load_file

    from svdcli.families.svd.tiny import write_tiny_checkpoint

    full = ck.load_checkpoint(write_tiny_checkpoint(tmp_path / "tiny.safetensors"))
    src = ck.save_ours(tmp_path / "no_cond.safetensors", {p: full.parts[p] for p in ("unet", "vae")},
                       full.config, full.vae_config)
    out = tmp_path / "d"
    result = runner.invoke(app, ["convert", str(src), "--to", "diffusers", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "no conditioner" in result.output and "cannot load" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["unet", "vae"]
    assert json.loads((out / "unet" / "config.json").read_text())["_class_name"] == "UNetSpatioTemporalConditionModel"
    assert load_file(str(out / "vae" / "diffusion_pytorch_model.safetensors"))


def test_official_image_tower_gets_the_official_image_encoder_config(reference_dir):
    """The real SVD file's ViT-H-14 tower (shapes from its key list) -> image_encoder/config.json
    of stabilityai/stable-video-diffusion-img2vid."""
    from svdcli.families.svd.conditioner_diffusers import IMAGE_TOWER
    from svdcli.families.svd.diffusers_folder import clip_vision_config

    rows = [line.split("\t") for line in (reference_dir / "svd_checkpoint_keys.tsv").read_text().splitlines()]
    prefix = "conditioner." + IMAGE_TOWER
    visual = {k[len(prefix):]: torch.empty(json.loads(s.replace("(", "[").replace(",)", "]").replace(")", "]")),
                                           device="meta") for k, s in rows if k.startswith(prefix)}
    cfg = clip_vision_config(visual, None)
    assert {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                "patch_size", "image_size", "projection_dim", "hidden_act")} == {
        "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 16,
        "patch_size": 14, "image_size": 224, "projection_dim": 1024, "hidden_act": "gelu"}
