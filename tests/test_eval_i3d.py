"""The I3D of FVD: the converted official layout loads strictly, the outputs have the official
shapes, the network equals VideoGPT's port (as cd-fvd ships it) on the same weights, the
preprocessing follows each protocol on known inputs, and conversion never runs a TorchScript
file unless told the file is trusted."""
from __future__ import annotations

import pytest
import torch

from eval_helpers import TINY_WIDTH, random_state, styleganv_state
from numeric import assert_close_ulps
from svdcli.errors import SvdError
from svdcli.eval.i3d import I3D, I3DConfig, is_videogpt_layout, load_state, rename_videogpt
from svdcli.eval.protocol import to_network_input

# names of StyleGAN-V's i3d_torchscript.pt (hassony2's i3dpt port of the TF-hub model)
OFFICIAL_KEYS = ("conv3d_1a_7x7.conv3d.weight", "conv3d_1a_7x7.batch3d.running_var", "conv3d_2c_3x3.batch3d.bias",
                 "mixed_3b.branch_0.conv3d.weight", "mixed_3b.branch_1.1.conv3d.weight",
                 "mixed_4f.branch_2.0.batch3d.running_mean", "mixed_5c.branch_3.1.batch3d.weight",
                 "conv3d_0c_1x1.conv3d.weight", "conv3d_0c_1x1.conv3d.bias")


def test_full_network_has_the_official_layout_and_shapes():
    with torch.device("meta"):
        net = I3D()
    state = net.state_dict()
    assert all(k in state for k in OFFICIAL_KEYS)
    assert tuple(state["conv3d_1a_7x7.conv3d.weight"].shape) == (64, 3, 7, 7, 7)
    assert tuple(state["mixed_5c.branch_0.conv3d.weight"].shape) == (384, 832, 1, 1, 1)
    assert tuple(state["conv3d_0c_1x1.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert "conv3d_1a_7x7.conv3d.bias" not in state            # no bias before batch norm
    params = sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert 12_000_000 < params < 13_000_000                  # I3D RGB: ~12.3M weights + BN shifts


def test_converted_layout_loads_strictly_and_gives_official_output_shapes():
    net = load_state(I3D(I3DConfig(width=TINY_WIDTH)), styleganv_state(), "test")
    seen = {}
    net.mixed_5c.register_forward_hook(lambda m, i, o: seen.update(mixed_5c=o.shape))
    logits = net(torch.rand(2, 3, 16, 224, 224) * 2 - 1)
    assert tuple(logits.shape) == (2, 400)
    assert tuple(seen["mixed_5c"]) == (2, net.cfg.ch(384) + net.cfg.ch(384) + 2 * net.cfg.ch(128), 2, 7, 7)
    bad = styleganv_state()
    bad.pop("mixed_4d.branch_2.1.conv3d.weight")
    with pytest.raises(SvdError, match="missing mixed_4d.branch_2.1.conv3d.weight"):
        load_state(I3D(I3DConfig(width=TINY_WIDTH)), bad, "test")


def test_equals_videogpt_port_on_the_same_weights():
    cdfvd = pytest.importorskip("cdfvd.third_party.i3d.pytorch_i3d")
    ref = cdfvd.InceptionI3d(400, in_channels=3).eval()
    state = random_state(ref, seed=5)
    ref.load_state_dict(state)
    assert is_videogpt_layout(state)
    ours = load_state(I3D(I3DConfig(bn_eps=1e-5)), rename_videogpt(state), "videogpt")
    x = torch.rand(1, 3, 9, 224, 224) * 2 - 1   # 9 frames: the fewest the temporal strides take
    with torch.inference_mode():
        expected, got = ref(x), ours(x)
    assert_close_ulps(got, expected, scale=float(expected.abs().max()), ulps=64)


def test_stretch_protocol_on_known_inputs():
    flat = torch.full((1, 16, 40, 60, 3), 255, dtype=torch.uint8)
    x = to_network_input(flat, 224, "stretch", (-1.0, 1.0))
    assert tuple(x.shape) == (1, 3, 16, 224, 224)
    assert_close_ulps(x, torch.ones_like(x))                   # 255 -> 1
    assert_close_ulps(to_network_input(flat * 0, 224, "stretch", (-1.0, 1.0)), -torch.ones_like(x))
    # a left/right split: bilinear with half-pixel centres keeps the split at the middle column
    split = torch.zeros((1, 16, 2, 2, 3), dtype=torch.uint8)
    split[..., 1, :] = 255
    row = to_network_input(split, 224, "stretch", (-1.0, 1.0))[0, 0, 0, 0]
    assert_close_ulps(row[:56], -torch.ones(56))                # first quarter: all left pixel
    assert_close_ulps(row[168:], torch.ones(56))                # last quarter: all right pixel
    assert_close_ulps(row[111] + row[112], torch.tensor(0.0), scale=1.0)   # symmetric around the centre


def test_videogpt_protocol_resizes_short_side_crops_centre_and_uses_half_range():
    video = torch.zeros((1, 16, 240, 320, 3), dtype=torch.uint8)
    video[:, :, :, :40] = 255                                 # a bright band at the left edge
    x = to_network_input(video, 224, "crop", (-0.5, 0.5))
    assert tuple(x.shape) == (1, 3, 16, 224, 224)
    # 320 px -> ceil(320 * 224 / 240) = 299, centre crop drops 37 columns on the left: the 37 px band
    # (40 * 224/240 = 37.3) is cut away entirely, so the crop is dark but for the blurred edge
    assert float(x.max()) <= 0.5 and float(x.min()) == pytest.approx(-0.5)
    assert float(x[0, 0, 0, :, 2:].max()) == pytest.approx(-0.5)


def test_conversion_runs_torchscript_only_when_trusted(tmp_path):
    from svdcli.eval.networks import convert, load_network

    net = load_state(I3D(I3DConfig(width=TINY_WIDTH)), styleganv_state(seed=2), "test")
    x = torch.rand(1, 3, 9, 224, 224) * 2 - 1
    scripted = torch.jit.trace(net, x, check_trace=False)
    src = tmp_path / "i3d_torchscript.pt"
    scripted.save(str(src))
    with pytest.raises(SvdError, match="--trusted"):
        convert(src, tmp_path / "i3d.safetensors")
    info = convert(src, tmp_path / "i3d.safetensors", trusted=True)
    assert info["network"] == "i3d-styleganv" and len(info["source_sha256"]) == 64
    loaded, kind = load_network(tmp_path / "i3d.safetensors", "i3d")
    with torch.inference_mode():
        expected = net(x)
        assert_close_ulps(loaded(x), expected, scale=float(expected.abs().max()), ulps=64)
