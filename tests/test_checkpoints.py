"""Checkpoint formats: official single file, ours, diffusers folders, SD 2.1 inflation, and the
`svd convert` / `svd inspect` commands, on tiny checkpoints written by the tests."""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.families.svd import formats as ck
from svdcli.families.svd.checkpoint import compare_keys, infer_unet_config
from svdcli.families.svd.inflate import is_video_only
from svdcli.models.config import UNetConfig
from svdcli.models.unet import VideoUNet

PREFIX = "model.diffusion_model."
runner = CliRunner()


@pytest.fixture(scope="module")
def official(fixtures_dir, tmp_path_factory):
    """The fixture UNet + VAE (+ one conditioner tensor) as one official-layout file."""
    from safetensors.torch import load_file, save_file

    sd = load_file(fixtures_dir / "unet_tiny.safetensors")
    sd.update(load_file(fixtures_dir / "vae_tiny.safetensors"))
    sd["conditioner.embedders.0.open_clip.model.visual.proj"] = torch.randn(8, 4)
    path = tmp_path_factory.mktemp("ckpt") / "svd_tiny.safetensors"
    save_file(sd, str(path))
    return path


@pytest.fixture(scope="module")
def fixture_case(fixtures_dir):
    from safetensors.torch import load_file

    io = {k: v.clone() for k, v in load_file(fixtures_dir / "unet_tiny_io.safetensors").items()}
    return (io["x"], io["timesteps"], io["context"], io["y"], 3, io["image_only_indicator"]), io["out"]


def _max_diff(unet, case) -> float:
    args, expected = case
    with torch.no_grad():
        return (unet.eval()(*[a.clone() if torch.is_tensor(a) else a for a in args]) - expected).abs().max().item()


def test_official_layout_maps_every_key(reference_dir):
    """Every key of the real SVD file lands in a part, and every UNet/VAE key has a diffusers name."""
    from svdcli.families.svd.unet_diffusers import unet_state_to_diffusers
    from svdcli.models.vae import vae_state_to_diffusers

    rows = [line.split("\t") for line in (reference_dir / "svd_checkpoint_keys.tsv").read_text().splitlines()]
    sd = {k: torch.empty(json.loads(s.replace("(", "[").replace(",)", "]").replace(")", "]")), device="meta")
          for k, s in rows}
    parts, unexpected = ck.split_official(sd)
    assert unexpected == [] and sum(map(len, parts.values())) == len(rows) == 2446
    assert compare_keys(parts["unet"], UNetConfig.svd()) == {"missing": [], "unexpected": [], "mismatched": []}
    assert infer_unet_config(parts["unet"]) == UNetConfig.svd()
    assert len(unet_state_to_diffusers(parts["unet"], UNetConfig.svd())) == 1428
    assert len(vae_state_to_diffusers(parts["vae"])) >= len(parts["vae"])


def test_official_to_ours_round_trip(official, fixture_case, tmp_path):
    ckpt = ck.load_checkpoint(official, num_head_channels=16)
    kind, parts, cfg = ckpt
    assert kind == "official" and cfg == UNetConfig.tiny() and ckpt.unexpected == []
    assert set(parts) == {"unet", "vae", "conditioner"}
    result = runner.invoke(app, ["convert", str(official), "--to", "ours", "--out", str(tmp_path / "o.safetensors"),
                                 "--num-head-channels", "16"])
    assert result.exit_code == 0, result.output
    ours = ck.load_checkpoint(tmp_path / "o.safetensors")
    assert ours.kind == "ours" and ours.config == cfg and ours.vae_config == ckpt.vae_config
    for part in parts:
        assert all(torch.equal(parts[part][k], ours.parts[part][k]) for k in parts[part])
    assert _max_diff(ck.load_unet(tmp_path / "o.safetensors"), fixture_case) <= 2e-5


def test_convert_to_diffusers_loads_in_diffusers(official, fixture_case, tmp_path):
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel

    out = tmp_path / "svd_diffusers"
    result = runner.invoke(app, ["convert", str(official), "--to", "diffusers", "--out", str(out),
                                 "--num-head-channels", "16"])
    assert result.exit_code == 0, result.output
    assert "conditioner not written" in result.output
    unet = UNetSpatioTemporalConditionModel.from_pretrained(out / "unet")
    AutoencoderKLTemporalDecoder.from_pretrained(out / "vae")
    assert sum(p.numel() for p in unet.parameters()) == 2_890_762
    back = ck.load_checkpoint(out)      # and back: our loader reads the folder
    assert back.kind == "diffusers" and back.config == UNetConfig.tiny()
    assert _max_diff(ck.load_unet(back), fixture_case) <= 2e-5
    assert "conditioner" not in back.parts


def test_diffusers_folder_image_encoder_becomes_the_conditioner(official, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    out = tmp_path / "svd_diffusers"
    assert runner.invoke(app, ["convert", str(official), "--to", "diffusers", "--out", str(out),
                               "--num-head-channels", "16"]).exit_code == 0
    tower = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14, projection_dim=16))
    tower.save_pretrained(out / "image_encoder")
    ckpt = ck.load_checkpoint(out)
    cond = ckpt.parts["conditioner"]
    assert any(k.startswith("embedders.0.open_clip.model.visual.") for k in cond)
    assert any(k.startswith("embedders.3.encoder.encoder.") for k in cond)
    assert any("conditioner from image_encoder" in n for n in ckpt.notes)


def test_inspect_lists_missing_and_unexpected_keys(official, tmp_path):
    from safetensors.torch import load_file, save_file

    sd = load_file(official)
    del sd[PREFIX + "out.2.bias"]
    sd["ema.decay"] = torch.tensor(0.9999)
    broken = tmp_path / "broken.safetensors"
    save_file(sd, str(broken))
    result = runner.invoke(app, ["inspect", str(broken), "--num-head-channels", "16"])
    assert result.exit_code == 0, result.output
    assert "official checkpoint" in result.output
    assert "unet missing: 1" in result.output and "out.2.bias" in result.output
    assert "unexpected (no part): 1" in result.output and "ema.decay" in result.output
    assert "2,890,758" in result.output               # UNet parameters actually present
    # converting it refuses with a message, not a traceback
    result = runner.invoke(app, ["convert", str(broken), "--to", "ours", "--out", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and "missing" in result.output and "Traceback" not in result.output


def test_inspect_rejects_what_is_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.safetensors"
    text.write_text("not a checkpoint")
    result = runner.invoke(app, ["inspect", str(text)])
    assert result.exit_code == 2 and "not a readable safetensors checkpoint" in result.output
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(2)}, str(other))
    result = runner.invoke(app, ["inspect", str(other)])
    assert result.exit_code == 2 and "none of a known" in result.output
    result = runner.invoke(app, ["inspect", str(tmp_path / "svd_xt.safetensors")])
    assert result.exit_code == 2 and "not found" in result.output and "huggingface.co" in result.output


def test_convert_does_not_overwrite_without_force(official, tmp_path):
    out = tmp_path / "o.safetensors"
    out.write_text("keep me")
    result = runner.invoke(app, ["convert", str(official), "--to", "ours", "--out", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    assert out.read_text() == "keep me"


def _image_unet_state(cfg: UNetConfig) -> dict[str, torch.Tensor]:
    """A random SD-2.1-layout image UNet (4 input channels, no temporal layers, no label_emb)."""
    torch.manual_seed(3)
    net = VideoUNet(UNetConfig.from_dict({**cfg.to_dict(), "in_channels": 4}))
    with torch.no_grad():
        for p in net.parameters():   # every path active, activations of order 1
            p.copy_(torch.randn(p.shape) / p[0].numel() ** 0.5 if p.ndim > 1 else 0.1 * torch.randn(p.shape))
    return {k: v for k, v in net.state_dict().items() if not is_video_only(k)}


def test_sd21_inflation_starts_as_the_image_model(tmp_path):
    from safetensors.torch import save_file

    cfg = UNetConfig.tiny()
    image = _image_unet_state(cfg)
    path = tmp_path / "sd21_tiny.safetensors"
    save_file({PREFIX + k: v for k, v in image.items()} | {"cond_stage_model.proj": torch.zeros(3)}, str(path))
    assert ck.detect_format(path) == "sd21"
    unet = ck.load_unet(path, unet_config=cfg).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 8, 16, generator=g)
    ts, ctx, y = torch.randn(6, generator=g), torch.randn(6, 1, 40, generator=g), torch.randn(6, 24, generator=g)
    with torch.no_grad():
        video = unet(x, ts, ctx, y, 3, torch.zeros(2, 3))
        images = unet(x, ts, ctx, y, 3, torch.ones(2, 3))        # the purely spatial network
        x_other = x.clone()
        x_other[:, 4:] = torch.randn(6, 4, 8, 16, generator=g)   # conditioning latent starts ignored
        y_other = torch.randn(6, 24, generator=g)                 # so does the micro-conditioning
        changed = unet(x_other, ts, ctx, y_other, 3, torch.zeros(2, 3))
    assert (video - images).abs().max().item() < 1e-5
    assert (video - changed).abs().max().item() < 1e-5
    # ... but training can move the temporal layers: the zeroed layers get gradients
    unet.train()
    unet(x, ts, ctx, y, 3).square().mean().backward()
    temporal_out = unet.input_blocks[1][1].time_stack[0].attn1.to_out[0].weight
    assert temporal_out.grad.abs().sum() > 0
    assert unet.input_blocks[1][0].time_stack.out_layers[3].weight.grad.abs().sum() > 0


def test_convert_sd21_to_ours_writes_a_video_unet(tmp_path):
    from safetensors.torch import save_file

    cfg = UNetConfig.tiny(num_head_channels=32)
    path = tmp_path / "sd21.safetensors"
    save_file({PREFIX + k: v for k, v in _image_unet_state(cfg).items()}, str(path))
    out = tmp_path / "init.safetensors"
    result = runner.invoke(app, ["convert", str(path), "--to", "ours", "--out", str(out), "--num-head-channels", "32"])
    assert result.exit_code == 0, result.output
    ckpt = ck.load_checkpoint(out)
    assert ckpt.config.in_channels == 8 and ckpt.config.num_head_channels == 32
    assert compare_keys(ckpt.parts["unet"], ckpt.config)["missing"] == []
