"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), the perceptual term of the autoencoder losses: unit-normalised VGG16 features of both
images, their squared difference weighted per channel by LPIPS' linear heads, averaged over space
and summed over the five layers.

The linear heads ship inside the `lpips` wheel (weights/v0.1/vgg.pth). The VGG16 backbone is
torchvision's ImageNet file, which the wheel downloads on first use; here it is read from a file
instead (`backbone`), so a machine without internet gets a clear error naming it. `random`
builds the same network with random backbone weights: a test mode, not a perceptual metric.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from svdcli.errors import MissingWeightsError

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
# torchvision.models.vgg16().features indices -> the five LPIPS slices (relu1_2 ... relu5_3)
SLICE_STARTS = (0, 4, 9, 16, 23, 30)


def default_backbone_path() -> Path:
    """Where torchvision (and so the `lpips` package) caches the VGG16 file."""
    hub = os.environ.get("TORCH_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "torch")
    return Path(hub) / "hub" / "checkpoints" / VGG16_FILE


def _lpips_state(vgg_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's `features.N.*` keys -> the lpips package's `net.sliceK.N.*` keys."""
    out = {}
    for key, value in vgg_state.items():
        if not key.startswith("features."):
            continue
        index = int(key.split(".")[1])
        if index >= SLICE_STARTS[-1]:
            continue
        k = next(i for i in range(5) if SLICE_STARTS[i] <= index < SLICE_STARTS[i + 1])
        out[f"net.slice{k + 1}.{key[len('features.'):]}"] = value
    return out


DECODER_HINT = ("decoder.lpips_backbone", "decoder.perceptual_weight=0 trains without the perceptual term")


def lpips_vgg(backbone: str = "", hint: tuple[str, str] = DECODER_HINT) -> nn.Module:
    """The frozen LPIPS(vgg) network: `backbone` is a VGG16 file, "" (torch's cache) or "random".
    `hint`: (the setting that names the file, what to do without it), for the missing-file error."""
    from svdcli.optional import imported

    lpips = imported("lpips", "LPIPS (the decoder stage's perceptual term, svd eval multiview)")

    with warnings.catch_warnings():  # lpips 0.1.4 calls torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(pretrained=True, net="vgg", pnet_rand=True, verbose=False)  # heads from the wheel
    if backbone != "random":
        path = Path(backbone) if backbone else default_backbone_path()
        if not path.is_file():
            raise MissingWeightsError(
                f"LPIPS needs torchvision's VGG16 ImageNet weights: fetch {VGG16_URL} "
                f"and put it at {default_backbone_path()} (or pass its path as {hint[0]}); "
                f"not found: {path}. {hint[1]}")
        vgg = torch.load(str(path), map_location="cpu", weights_only=True)
        state = _lpips_state(vgg)
        if len(state) != 26:  # 13 convolutions, weight and bias
            raise MissingWeightsError(f"{path} is not torchvision's VGG16 file ({len(state)} of 26 conv tensors)")
        missing, _ = net.load_state_dict(state, strict=False)
        assert not any(k.startswith("net.") for k in missing), missing
    return net.eval().requires_grad_(False)


def perceptual_distance(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS d(x, y) per image (N,) for images (N, 3, H, W) in [-1, 1]."""
    return net(x.float(), y.float()).flatten()
