"""The video UNet against the official implementation's recorded outputs and key layout."""
from __future__ import annotations

import json

import pytest
import torch

from svdcli.models.config import UNetConfig
from svdcli.models.unet import VideoUNet

PREFIX = "model.diffusion_model."
CASES = ["out", "out_indicator_zeros", "out_indicator_frames", "out_perframe_cond", "out_small_x"]


def load_fixture_unet(fixtures_dir) -> VideoUNet:
    from safetensors.torch import load_file

    params = json.loads((fixtures_dir / "unet_tiny_config.json").read_text())["params"]
    net = VideoUNet(UNetConfig.from_sgm_params(params)).eval()
    # Clone: the safetensors buffer is unaligned and would take other SIMD paths (fixtures README).
    sd = {k[len(PREFIX):]: v.clone() for k, v in load_file(fixtures_dir / "unet_tiny.safetensors").items()}
    net.load_state_dict(sd, strict=True)
    return net


@pytest.fixture(scope="module")
def fixture_unet(fixtures_dir):
    return load_fixture_unet(fixtures_dir)


@pytest.fixture(scope="module")
def fixture_io(fixtures_dir):
    from safetensors.torch import load_file

    io = {k: v.clone() for k, v in load_file(fixtures_dir / "unet_tiny_io.safetensors").items()}
    spec = json.loads((fixtures_dir / "unet_tiny_io.json").read_text())
    return io, spec["cases"]


def test_fixture_config_is_the_tiny_preset(fixtures_dir):
    params = json.loads((fixtures_dir / "unet_tiny_config.json").read_text())
    cfg = UNetConfig.from_sgm_params(params["params"])
    assert cfg == UNetConfig.tiny()
    net = VideoUNet(cfg)
    assert sum(p.numel() for p in net.parameters()) == params["num_parameters"]


@pytest.mark.parametrize("case", CASES)
def test_unet_reproduces_official_outputs(fixture_unet, fixture_io, case):
    io, cases = fixture_io
    c = cases[case]
    with torch.no_grad():
        out = fixture_unet(io[c["x"]], io[c["timesteps"]], io[c["context"]], io[c["y"]],
                           c["num_video_frames"], io[c["image_only_indicator"]])
    assert out.shape == io[case].shape
    assert (out - io[case]).abs().max().item() <= 2e-5


def test_image_only_videos_ignore_other_frames(fixture_unet, fixture_io):
    """With the indicator set, each frame is an independent image: shuffling frames permutes outputs."""
    io, _ = fixture_io
    x, ts, ctx, y = io["x"][3:], io["timesteps"][3:], io["context"][3:], io["y"][3:]
    ones = torch.ones(1, 3)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        out = fixture_unet(x, ts, ctx, y, 3, ones)
        out_perm = fixture_unet(x[perm], ts[perm], ctx[perm], y[perm], 3, ones)
        video = fixture_unet(x[perm], ts[perm], ctx[perm], y[perm], 3, torch.zeros(1, 3))
    assert torch.allclose(out[perm], out_perm, atol=2e-5)
    assert not torch.allclose(out[perm], video, atol=1e-3)   # the temporal layers do act on videos


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    net = VideoUNet(UNetConfig.tiny(channel_mult=(1, 2), attention_resolutions=(1,)))
    with torch.no_grad():        # the zero-initialised output layers would hide most gradients
        for p in net.parameters():
            p.copy_(torch.randn(p.shape) / p[0].numel() ** 0.5 if p.ndim > 1 else 0.1 * torch.randn(p.shape))
    x, ts = torch.randn(4, 8, 8, 8), torch.randn(4)
    ctx, y = torch.randn(4, 1, 40), torch.randn(4, 24)

    def grads(ckpt: bool):
        net.zero_grad()
        net.gradient_checkpointing = ckpt
        net(x, ts, ctx, y, 2).square().mean().backward()
        return [p.grad.clone() for p in net.parameters()]

    for a, b in zip(grads(False), grads(True)):
        assert torch.allclose(a, b, atol=1e-6)


def test_full_svd_config_matches_official_key_set(reference_dir):
    expected = {}
    for line in (reference_dir / "svd_checkpoint_keys.tsv").read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(PREFIX):
            expected[key[len(PREFIX):]] = tuple(json.loads(shape.replace("(", "[").replace(")", "]").replace(",]", "]")))
    with torch.device("meta"):
        net = VideoUNet(UNetConfig.svd())
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert len(expected) == 1428
    assert sorted(set(expected) ^ set(ours)) == []
    assert {k: v for k, v in ours.items() if expected[k] != v} == {}
    assert sum(p.numel() for p in net.parameters()) == 1_524_623_082


def test_frames_must_divide_batch():
    net = VideoUNet(UNetConfig.tiny())
    with pytest.raises(ValueError, match="multiple of 3 frames"):
        net(torch.randn(4, 8, 8, 8), torch.zeros(4), torch.zeros(4, 1, 40), torch.zeros(4, 24), 3)
