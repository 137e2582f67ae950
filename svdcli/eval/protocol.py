"""The measurement protocols (what a number means) and the result files that record them.

Every choice that moves a metric is a field here, written into the result JSON beside the value:
the feature network and its file's sha256, frames, stride, resize, value range, covariance
estimator, how clips were drawn, the seed, sample counts, what was skipped, the svdcli version.
Two results are comparable when their `protocol` blocks are equal; docs/eval.md cites where each
default comes from.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from svdcli.errors import SvdError


@dataclass(frozen=True)
class FVDProtocol:
    """How FVD clips become I3D inputs, and how the Gaussians are fitted."""

    name: str
    frames: int = 16                 # consecutive frames per clip
    stride: int = 1                  # take every stride-th frame (StyleGAN-V's subsample_factor)
    size: int = 224                  # I3D input side
    resize: str = "stretch"          # stretch: each frame to size x size; crop: short side to size, centre crop
    value_range: tuple[float, float] = (-1.0, 1.0)
    network: str = "i3d-styleganv"   # default weights (svdcli.eval.networks.PUBLISHED); --i3d may name others
    unbiased: bool = False           # covariance / (N - 1) instead of / N
    reference_samples: int = 2048    # the protocol's sample count per side; fewer gives a warning
    real_sampling: str = "random"    # start | random | center (svdcli.eval.videos)

    def describe(self) -> dict:
        return {**dataclasses.asdict(self), "value_range": list(self.value_range),
                "interpolation": "bilinear, align_corners=False, no antialiasing (torch F.interpolate)",
                "features": "Kinetics-400 logits before the softmax, averaged over time (400-d)",
                "covariance": "unbiased (N-1)" if self.unbiased else "biased (N)"}


FVD_PROTOCOLS = {
    # StyleGAN-V (Skorokhodov et al. 2022), src/metrics/frechet_video_distance.py + metric_utils.py:
    # uint8 -> [-1, 1] and resized to 224 inside its TorchScript I3D (the TF-hub model), one clip of
    # 16 consecutive frames at a random offset per real video, 2048 per side, mean/cov over N
    "styleganv": FVDProtocol("styleganv"),
    # VideoGPT (Yan et al. 2021), videogpt/fvd/fvd.py + data.py: short side to 224 and centre crop,
    # [-0.5, 0.5] (its `video -= 0.5`), piergiaj's port with batch-norm eps 1e-5, cov over N - 1
    "videogpt": FVDProtocol("videogpt", resize="crop", value_range=(-0.5, 0.5), network="i3d-videogpt",
                            unbiased=True),
}


def fvd_protocol(name: str, **overrides) -> FVDProtocol:
    if name not in FVD_PROTOCOLS:
        raise SvdError(f"unknown --protocol {name!r}; choose one of {', '.join(FVD_PROTOCOLS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    proto = dataclasses.replace(FVD_PROTOCOLS[name], **given)
    if proto.frames < 9:
        raise SvdError(f"--frames {proto.frames}: I3D needs at least 9 frames (its temporal strides divide by 8)")
    if proto.stride < 1:
        raise SvdError("--stride must be at least 1")
    return proto


def to_network_input(clips: torch.Tensor, size: int, resize: str, value_range: tuple[float, float]) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, 3, T, size, size) float32 in `value_range` (the protocol's resize)."""
    b, t, h, w, _ = clips.shape
    x = clips.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w).float()   # (B*T, 3, H, W) in [0, 255]
    if resize == "stretch":
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    elif resize == "crop":
        scale = size / min(h, w)
        target = (size, math.ceil(w * scale)) if h < w else (math.ceil(h * scale), size)
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    else:
        raise ValueError(f"unknown resize {resize!r}")
    lo, hi = value_range
    x = x / 255.0 * (hi - lo) + lo
    return x.reshape(b, t, 3, size, size).transpose(1, 2).contiguous()  # (B, 3, T, S, S)


def sample_warning(metric: str, counts: dict[str, int], reference: int) -> str | None:
    """The warning when a side has fewer samples than the protocol's."""
    low = {side: n for side, n in counts.items() if n < reference}
    if not low:
        return None
    sides = ", ".join(f"{side} {n}" for side, n in low.items())
    return (f"{metric} from fewer samples than the protocol's {reference} per side ({sides}): the value is "
            f"biased upwards and not comparable with published {metric} numbers")


def network_record(path: Path, name: str) -> dict:
    """What a result says about its feature network file: name, path, sha256 (and the source's)."""
    from svdcli.eval.networks import file_sha256, source_sha256

    return {"name": name, "file": str(path), "sha256": file_sha256(path), "source_sha256": source_sha256(path)}


def write_result(path: Path | None, result: dict) -> dict:
    """Complete `result` (version, time) and write it as JSON (atomically) when `path` is given."""
    from svdcli import __version__

    result = {**result, "svdcli_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(result, indent=1, default=_plain) + "\n")
        tmp.replace(path)
    return result


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
