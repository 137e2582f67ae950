"""The VDM space-time U-Net: relative-position temporal attention, image masking, joint batches,
config checks and the text tower's missing-weights error."""
from __future__ import annotations

import pytest
import torch

from svdcli.families.vdm.config import VDMNetConfig
from svdcli.families.vdm.network import TemporalAttention, VDMUNet, temporal_mask
from svdcli.families.vdm.training import joint_frames
from test_train_helpers import one_thread  # noqa: F401
from numeric import assert_close_ulps

C, H, W = 8, 4, 4


def _random(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (the output conv starts at zero, the position bias near zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module.eval()


def _net() -> VDMUNet:
    return _random(VDMUNet(VDMNetConfig(channels=8, mults=(1, 2), heads=2, attention_levels=(0, 1), max_offset=4)))


def test_temporal_attention_is_translation_invariant_in_time():
    """A clip placed 3 frames later (behind 3 masked-out frames) gives the same outputs, shifted;
    reversing the clip does not reverse the outputs, so frame offsets are used, not ignored."""
    attn = _random(TemporalAttention(C, heads=2, max_offset=4))
    clip = torch.randn(6, C, H, W)
    with torch.no_grad():
        out = attn(clip, frames=6)
        padded = torch.cat([torch.randn(3, C, H, W), clip])
        shifted = attn(padded, frames=9, image_only_indicator=torch.tensor([[1.0] * 3 + [0.0] * 6]))
        reversed_out = attn(clip.flip(0), frames=6)
    torch.testing.assert_close(shifted[3:], out, atol=1e-5, rtol=1e-5)
    assert (reversed_out.flip(0) - out).abs().max() > 1e-2


def test_the_whole_network_is_translation_invariant_in_time():
    net = _net()
    clip, t = torch.randn(5, 3, 8, 8), torch.full((5,), 0.4)
    with torch.no_grad():
        out = net(clip, t, frames=5)
        shifted = net(torch.cat([torch.randn(2, 3, 8, 8), clip]), torch.full((7,), 0.4), frames=7,
                      image_only_indicator=torch.tensor([[1.0, 1.0, 0, 0, 0, 0, 0]]))
    torch.testing.assert_close(shifted[2:], out, atol=1e-4, rtol=1e-4)


def test_an_image_frame_sees_only_itself_and_video_frames_see_each_other():
    net, t = _net(), torch.full((5,), 0.3)
    indicator = torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]])           # 3 video frames + 2 images
    x = torch.randn(5, 3, 8, 8)
    changed = x.clone()
    changed[0] = torch.randn(3, 8, 8)                                # another first video frame
    with torch.no_grad():
        a, b = net(x, t, frames=5, image_only_indicator=indicator), net(changed, t, frames=5, image_only_indicator=indicator)
        unmasked = net(x, t, frames=5), net(changed, t, frames=5)
    assert_close_ulps(a[3:], b[3:], msg="an image frame's output moved when a video frame changed:")
    assert (a[1:3] - b[1:3]).abs().max() > 1e-3, "the other video frames ignored the changed frame"
    assert (unmasked[0][3:] - unmasked[1][3:]).abs().max() > 1e-3  # without the mask images would mix
    other = x.clone()
    other[4] = torch.randn(3, 8, 8)                                  # another second image
    with torch.no_grad():
        c = net(other, t, frames=5, image_only_indicator=indicator)
    assert_close_ulps(a[:4], c[:4], msg="a video frame or the other image saw the changed image:")


def test_temporal_mask_is_the_identity_for_images():
    allowed = temporal_mask(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))[0]
    assert allowed.tolist() == [[True, True, False, False], [True, True, False, False],
                                [False, False, True, False], [False, False, False, True]]


def test_joint_batches_take_images_from_other_clips():
    video = torch.arange(3)[:, None, None, None, None].float().expand(3, 4, 1, 2, 2).clone()  # clip b is all b
    frames, indicator, source = joint_frames(video, 2, torch.Generator().manual_seed(0))
    assert frames.shape == (3, 6, 1, 2, 2)
    assert indicator.tolist() == [[0, 0, 0, 0, 1, 1]] * 3
    for b in range(3):
        assert torch.equal(frames[b, :4], video[b])  # copied
        assert all(int(frames[b, 4 + k, 0, 0, 0]) == int(source[b, k]) != b for k in range(2))


def test_vdm_config_errors_name_the_key(tmp_path):
    from svdcli.train.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="parameterisation"):
        config_from_dict({"family": "vdm", "parameterisation": "x0"})
    with pytest.raises(ConfigError, match="multiples of 2"):
        config_from_dict({"family": "vdm", "data": {"height": 33, "width": 32}})
    cfg = config_from_dict({"family": "vdm", "mults": [1, 2, 2], "data": {"height": 32, "width": 32}})
    assert cfg.family_config.net().mults == (1, 2, 2)


def test_the_open_clip_text_tower_without_weights_says_what_to_fetch(tmp_path, monkeypatch):
    from svdcli.errors import MissingWeightsError
    from svdcli.families.vdm.text import build_text_tower

    monkeypatch.setenv("SVD_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="ViT-H-14.*laion2b_s32b_b79k"):
        build_text_tower("open_clip", 0, 0)


def test_the_base_preset_builds_on_meta_and_docs_give_its_size():
    """`model: base` at full size on the meta device: every parameter trains (VDM trains from
    scratch); docs/families.md gives both counts (no text, and with the OpenCLIP tower's 1024-wide tokens)."""
    import dataclasses
    from pathlib import Path

    from svdcli.families.vdm.config import OPEN_CLIP_WIDTH, VDMConfig

    counts = []
    for text in ("none", "open_clip"):
        with torch.device("meta"):
            net = VDMUNet(VDMConfig(model="base", text=text).net())
        assert all(p.requires_grad for p in net.parameters())
        counts.append(sum(p.numel() for p in net.parameters()))
    temporal = sum(p.numel() for n, p in net.named_parameters() if ".temporal." in n)
    assert counts[1] > counts[0] > temporal > 0
    assert dataclasses.replace(VDMConfig(model="base", text="open_clip").net(), context_dim=0) == \
        VDMConfig(model="base").net() and OPEN_CLIP_WIDTH == 1024
    doc = (Path(__file__).resolve().parents[1] / "docs" / "families.md").read_text()
    assert all(f"{n:,}" in doc for n in counts + [temporal]), (counts, temporal)
