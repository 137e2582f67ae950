"""A diffusers folder samples the same video as diffusers' own StableVideoDiffusionPipeline, and a
folder that cannot be read is one clear error."""
import json

import pytest
from typer.testing import CliRunner


def test_diffusers_folder_matches_diffusers_pipeline():
    """Random weights on every path (diffusers initialises no layer to zero), one untimed run each."""
    from benchmarks.bench_sample import Case, run_case

    row = run_case(Case("tiny", frames=3, width=64, height=64, steps=2, repeats=0), "cpu", full=False)
    assert row["frame_std"] > 5  # a textured video, not a flat one both could agree on
    assert row["max_diff"] <= 2 and row["mean_diff"] < 0.05


def test_diffusers_folder_without_image_encoder_is_a_clear_error(tmp_path):
    import torch

    from svdcli.errors import MissingWeightsError
    from svdcli.families.svd.checkpoint import Checkpoint
    from svdcli.families.svd.diffusers_folder import save_diffusers
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.models.vae import VAEConfig, VideoAutoencoder
    from svdcli.sample.pipeline import load_model

    torch.manual_seed(0)
    cfg = UNetConfig.tiny()
    parts = {"unet": VideoUNet(cfg).state_dict(), "vae": VideoAutoencoder(VAEConfig.tiny()).state_dict()}
    save_diffusers(tmp_path, Checkpoint("ours", parts, cfg, VAEConfig.tiny()))
    with pytest.raises(MissingWeightsError, match="image_encoder"):
        load_model(tmp_path)


@pytest.fixture(scope="module")
def folder_parts(tmp_path_factory):
    """A tiny UNet + VAE diffusers folder: enough for the UNet config to be read."""
    import torch

    from svdcli.families.svd.checkpoint import Checkpoint
    from svdcli.families.svd.diffusers_folder import save_diffusers
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.models.vae import VAEConfig, VideoAutoencoder

    torch.manual_seed(0)
    cfg, root = UNetConfig.tiny(), tmp_path_factory.mktemp("diffusers_folder")
    parts = {"unet": VideoUNet(cfg).state_dict(), "vae": VideoAutoencoder(VAEConfig.tiny()).state_dict()}
    save_diffusers(root / "good", Checkpoint("ours", parts, cfg, VAEConfig.tiny()))
    return root / "good"


def _broken(good: dict, case: str) -> str:
    return {"truncated": json.dumps(good)[:40], "empty": "", "a list": "[1, 2]",
            "wrong type": json.dumps({**good, "block_out_channels": "320,640"}),
            "zero heads": json.dumps({**good, "num_attention_heads": 0}),
            "uneven heads": json.dumps({**good, "num_attention_heads": [1, 2, 3, 4]}),
            "other size": json.dumps({**good, "block_out_channels": [64, 64, 64, 128]})}[case]


@pytest.mark.parametrize("case", ["truncated", "empty", "a list", "wrong type", "zero heads",
                                  "uneven heads", "other size"])
def test_broken_unet_config_is_one_clear_error_for_inspect_and_sample(folder_parts, case, tmp_path):
    import shutil

    from PIL import Image

    from svdcli.cli.main import app

    folder = tmp_path / "folder"
    shutil.copytree(folder_parts, folder)
    config = folder / "unet" / "config.json"
    config.write_text(_broken(json.loads(config.read_text()), case))
    Image.new("RGB", (64, 64)).save(tmp_path / "cond.png")
    runs = {"inspect": ["inspect", str(folder)],
            "sample": ["sample", "-i", str(tmp_path / "cond.png"), "-c", str(folder), "--steps", "1",
                       "-o", str(tmp_path / "v.mp4"), "--no-progress"]}
    for command, args in runs.items():
        result = CliRunner().invoke(app, args, env={"COLUMNS": "1000"})  # no wrapping of the line
        if case == "other size" and command == "inspect":
            assert result.exit_code == 0 and "unet mismatched" in result.output  # what inspect is for
            continue
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (command, result.output)
        assert str(folder) in lines[0] and "Traceback" not in result.output
        assert not (tmp_path / "v.mp4").exists()
