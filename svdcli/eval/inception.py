"""The Inception-v3 of FID (Heusel et al. 2017): TensorFlow's 2015-12-05 graph, 2048-d pool3 features.

It is torchvision's Inception3 (1008 classes, no aux head) with the graph's two quirks that
pytorch-fid documents: the average pools of the A, C and E blocks leave the zero padding out of
the mean (TF's behaviour), and the last E block pools with max instead of average. Parameter
names are pytorch-fid's (`pt_inception-2015-12-05-6726825d.pth`), which are torchvision's.

Inputs are 299x299 RGB. Frames reach that size by clean-fid's "clean" resize (Parmar et al. 2022):
PIL bicubic with antialiasing on each channel in float, no uint8 rounding after the resize; then
(x - 128) / 128, the graph's own first ops (`Sub`, `Mul` by 1/128).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models import inception as tv

SIZE = 299
BLOCKS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tv.InceptionA):
    def _forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [self.branch1x1(x), b5, b3, self.branch_pool(_tf_avg_pool(x))]


class FIDInceptionC(tv.InceptionC):
    def _forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            d = conv(d)
        return [self.branch1x1(x), b7, d, self.branch_pool(_tf_avg_pool(x))]


class FIDInceptionE(tv.InceptionE):
    """`max_pool`: the graph's last E block pools with max (pytorch-fid's FIDInceptionE_2)."""

    def __init__(self, in_channels: int, max_pool: bool = False):
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pool = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return [self.branch1x1(x), b3, d, self.branch_pool(pool)]


class FIDInception(torch.nn.Module):
    """(N, 3, 299, 299) in [-1, 1] -> (N, 2048) pool3 features."""

    def __init__(self):
        super().__init__()
        net = tv.Inception3(num_classes=1008, aux_logits=False, init_weights=False)
        net.Mixed_5b, net.Mixed_5c, net.Mixed_5d = FIDInceptionA(192, 32), FIDInceptionA(256, 64), FIDInceptionA(288, 64)
        net.Mixed_6b, net.Mixed_6c = FIDInceptionC(768, 128), FIDInceptionC(768, 160)
        net.Mixed_6d, net.Mixed_6e = FIDInceptionC(768, 160), FIDInceptionC(768, 192)
        net.Mixed_7b, net.Mixed_7c = FIDInceptionE(1280), FIDInceptionE(2048, max_pool=True)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in BLOCKS:
            x = getattr(self.net, name)(x)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)   # (N, 2048)


def load_inception_state(state: dict, source: str) -> FIDInception:
    """FIDInception with `state` (pytorch-fid / torchvision names) loaded strictly."""
    from svdcli.errors import SvdError

    net = FIDInception()
    own = net.net.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    for key, value in own.items():   # older files carry no batch-norm step counters
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    bad = sorted(set(own) ^ set(state)) or sorted(k for k in own if tuple(own[k].shape) != tuple(state[k].shape))
    if bad:
        raise SvdError(f"{source} is not the FID Inception-v3 state dict ({bad[0]} does not fit; {len(bad)} keys)")
    net.net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def clean_resize(frame: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) float32 in [0, 255]: PIL bicubic per channel in float."""
    from PIL import Image

    channels = [np.asarray(Image.fromarray(frame[..., c].astype(np.float32), mode="F")
                           .resize((size, size), resample=Image.BICUBIC), np.float32) for c in range(3)]
    return np.stack(channels, -1)


def to_network_input(frames: list[np.ndarray]) -> torch.Tensor:
    """Frames (H, W, 3) uint8 -> (N, 3, 299, 299) float32: clean resize, then (x - 128) / 128."""
    x = torch.from_numpy(np.stack([clean_resize(f) for f in frames]))   # (N, 299, 299, 3)
    return ((x - 128.0) / 128.0).permute(0, 3, 1, 2).contiguous()
