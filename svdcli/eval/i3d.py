"""Inflated Inception-v1 (I3D, Carreira & Zisserman 2017) as FVD uses it: Kinetics-400 logits.

The network is DeepMind's `kinetics-i3d` RGB model, the one TF-hub publishes as
`deepmind/i3d-kinetics-400/1` and the original FVD code (Unterthiner et al. 2018) embeds videos
with: 400 logits before the softmax, averaged over time. Padding is TensorFlow's SAME (computed
from each input's size, uneven where TF pads unevenly), batch norm has no learned scale (its
weight is 1 in converted files) and eps 1e-3 as in Sonnet.

Parameter names follow the PyTorch port StyleGAN-V ships as `i3d_torchscript.pt` (a TorchScript
build of `src/i3dpt_jit.py`, itself after hassony2/kinetics_i3d_pytorch's `i3dpt.py`):
`conv3d_1a_7x7.conv3d.weight`, `conv3d_1a_7x7.batch3d.running_mean`, `mixed_3b.branch_1.1.conv3d
.weight`, ..., `conv3d_0c_1x1.conv3d.bias`. VideoGPT's `i3d_pretrained_400.pt` (piergiaj's
pytorch-i3d names: `Conv3d_1a_7x7.bn.weight`, `Mixed_3b.b1b.conv3d.weight`, `logits.conv3d.bias`)
holds the same tensors under other names and was trained with batch-norm eps 1e-5;
`rename_videogpt` maps it. `I3DConfig.width` scales every channel count for tests (the layout,
names and structure stay those of the real network).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 400
# (in, [branch_0, branch_1 1x1, branch_1 3x3, branch_2 1x1, branch_2 3x3, branch_3 pool-proj])
MIXED = {
    "mixed_3b": [64, 96, 128, 16, 32, 32], "mixed_3c": [128, 128, 192, 32, 96, 64],
    "mixed_4b": [192, 96, 208, 16, 48, 64], "mixed_4c": [160, 112, 224, 24, 64, 64],
    "mixed_4d": [128, 128, 256, 24, 64, 64], "mixed_4e": [112, 144, 288, 32, 64, 64],
    "mixed_4f": [256, 160, 320, 32, 128, 128], "mixed_5b": [256, 160, 320, 32, 128, 128],
    "mixed_5c": [384, 192, 384, 48, 128, 128],
}


@dataclass(frozen=True)
class I3DConfig:
    width: float = 1.0           # channel multiplier; 1.0 is the published network
    bn_eps: float = 1e-3         # Sonnet's default (the TF-hub model); VideoGPT's port used 1e-5
    num_classes: int = NUM_CLASSES

    def ch(self, c: int) -> int:
        return max(1, round(c * self.width))


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) of one dimension: output ceil(size / stride)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    """Pad (B, C, T, H, W) with zeros the way TF SAME does for this input's size."""
    pads = []
    for dim, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad wants the last dim first
        pads.extend(same_padding(dim, k, s))
    return F.pad(x, pads) if any(pads) else x   # 1x1x1 units need none: no copy


class Unit3D(nn.Module):
    """Conv3d (SAME, no bias) + batch norm + ReLU; the logits unit has a bias and neither."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), eps: float = 1e-3,
                 logits: bool = False):
        super().__init__()
        self.kernel, self.stride, self.logits = tuple(kernel), tuple(stride), logits
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride=stride, bias=logits)
        if not logits:
            self.batch3d = nn.BatchNorm3d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        return x if self.logits else F.relu(self.batch3d(x))


class MaxPoolSame(nn.Module):
    """Max pooling with TF SAME padding; zeros pad post-ReLU inputs exactly as -inf would."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Mixed(nn.Module):
    """An Inception block: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | 3x3 max pool -> 1x1, concatenated."""

    def __init__(self, cin: int, c: list[int], eps: float):
        super().__init__()
        self.branch_0 = Unit3D(cin, c[0], eps=eps)
        self.branch_1 = nn.Sequential(Unit3D(cin, c[1], eps=eps), Unit3D(c[1], c[2], (3, 3, 3), eps=eps))
        self.branch_2 = nn.Sequential(Unit3D(cin, c[3], eps=eps), Unit3D(c[3], c[4], (3, 3, 3), eps=eps))
        self.branch_3 = nn.Sequential(MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, c[5], eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], 1)


class I3D(nn.Module):
    """(B, 3, T, 224, 224) in the protocol's range -> (B, num_classes) logits averaged over time."""

    def __init__(self, cfg: I3DConfig = I3DConfig()):
        super().__init__()
        self.cfg = cfg
        ch, eps = cfg.ch, cfg.bn_eps
        self.conv3d_1a_7x7 = Unit3D(3, ch(64), (7, 7, 7), (2, 2, 2), eps=eps)
        self.maxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3D(ch(64), ch(64), eps=eps)
        self.conv3d_2c_3x3 = Unit3D(ch(64), ch(192), (3, 3, 3), eps=eps)
        self.maxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        cin = ch(192)
        for name, widths in MIXED.items():
            if name == "mixed_4b":
                self.maxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
            if name == "mixed_5b":
                self.maxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
            c = [ch(w) for w in widths]
            setattr(self, name, Mixed(cin, c, eps))
            cin = c[0] + c[2] + c[4] + c[5]
        self.conv3d_0c_1x1 = Unit3D(cin, cfg.num_classes, logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():  # registration order is the network's order
            if module is self.conv3d_0c_1x1:
                break
            x = module(x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)          # (B, 1024, T/8 - 1, 1, 1) at 224 px
        x = self.conv3d_0c_1x1(x)                          # (B, 400, T', 1, 1)
        return x.squeeze(4).squeeze(3).mean(2)             # (B, 400)


# --- layouts ---------------------------------------------------------------------------------
_VIDEOGPT_BRANCH = {"b0": "branch_0", "b1a": "branch_1.0", "b1b": "branch_1.1", "b2a": "branch_2.0",
                    "b2b": "branch_2.1", "b3b": "branch_3.1"}


def rename_videogpt(state: dict) -> dict:
    """piergiaj/VideoGPT names (`Mixed_3b.b1b.bn.weight`, `logits.conv3d.bias`) -> ours."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "logits":
            parts[0] = "conv3d_0c_1x1"
        else:
            parts[0] = parts[0][0].lower() + parts[0][1:]   # Conv3d_1a_7x7 -> conv3d_1a_7x7, Mixed_3b -> mixed_3b
            if parts[0].startswith("mixed_") and parts[1] in _VIDEOGPT_BRANCH:
                parts[1:2] = _VIDEOGPT_BRANCH[parts[1]].split(".")
        out[".".join("batch3d" if p == "bn" else p for p in parts)] = value
    return out


def is_videogpt_layout(keys) -> bool:
    return any(k.startswith(("Conv3d_1a_7x7.", "Mixed_3b.b0.")) for k in keys)


def load_state(net: I3D, state: dict, source: str) -> I3D:
    """Load `state` (our layout; `num_batches_tracked` may be absent) strictly, or say what misfits."""
    from svdcli.errors import SvdError

    own = net.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        what = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected else
                f"{wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the network {tuple(own[wrong[0]].shape)}")
        raise SvdError(f"{source} is not an I3D Kinetics-400 state dict in the converted layout ({what}; "
                       f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} of another shape); "
                       "convert the published file with `svd eval convert`")
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)
