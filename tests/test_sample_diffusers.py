"""A diffusers folder samples the same video as diffusers' own StableVideoDiffusionPipeline."""
import pytest


def test_diffusers_folder_matches_diffusers_pipeline():
    """Random weights on every path (diffusers initialises no layer to zero), one untimed run each."""
    from benchmarks.bench_sample import Case, run_case

    row = run_case(Case("tiny", frames=3, width=64, height=64, steps=2, repeats=0), "cpu", full=False)
    assert row["frame_std"] > 5  # a textured video, not a flat one both could agree on
    assert row["max_diff"] <= 2 and row["mean_diff"] < 0.05


def test_diffusers_folder_without_image_encoder_is_a_clear_error(tmp_path):
    import torch

    from svdcli.errors import MissingWeightsError
    from svdcli.models.checkpoints import Checkpoint, save_diffusers
    from svdcli.models.config import UNetConfig
    from svdcli.models.unet import VideoUNet
    from svdcli.models.vae import VAEConfig, VideoAutoencoder
    from svdcli.sample.loading import load_model

    torch.manual_seed(0)
    cfg = UNetConfig.tiny()
    parts = {"unet": VideoUNet(cfg).state_dict(), "vae": VideoAutoencoder(VAEConfig.tiny()).state_dict()}
    save_diffusers(tmp_path, Checkpoint("ours", parts, cfg, VAEConfig.tiny()))
    with pytest.raises(MissingWeightsError, match="image_encoder"):
        load_model(tmp_path)
