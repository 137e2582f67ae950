"""`PackConfig`, the settings of `svd pack`, checked before any shard is written.

Its own module so that the packer (`pack.py`) and the sample builder (`samples.py`) both read it
and neither imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass

from svdcli.errors import SvdError
from svdcli.shards.micro_conditioning import MOTION_MAPS

FORMATS = ("mp4", "npy", "both")


@dataclass
class PackConfig:
    """Everything that changes the shards' content (it feeds the pack fingerprint)."""

    size: tuple[int, int] = (256, 384)  # (height, width) of every stored frame
    frames: int = 14  # most frames stored per sample
    min_frames: int = 14  # clips yielding fewer frames are skipped
    fps: float | None = None  # sample rate; None keeps the source rate
    shard_size: int = 100  # clips per shard
    format: str = "mp4"  # mp4, npy or both
    crf: int = 18  # H.264 quality of the stored mp4 (lower is better)
    motion_map: str = "linear"
    motion_scale: float = 32.0
    latents: str | None = None  # VAE source for precomputed latents (latents.py); None = no latents

    def validate(self) -> None:
        h, w = self.size
        if h <= 0 or w <= 0 or h % 2 or w % 2:
            raise SvdError(f"--size {h}x{w}: height and width must be positive and even (H.264 4:2:0)")
        if self.frames < 1 or not 1 <= self.min_frames <= self.frames:
            raise SvdError(f"need 1 <= --min-frames ({self.min_frames}) <= --frames ({self.frames})")
        if self.fps is not None and self.fps <= 0:
            raise SvdError(f"--fps must be positive, not {self.fps}")
        if self.shard_size < 1:
            raise SvdError("--shard-size must be at least 1")
        if self.format not in FORMATS:
            raise SvdError(f"--format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.motion_map not in MOTION_MAPS:
            raise SvdError(f"--motion-map must be one of {', '.join(MOTION_MAPS)}, not {self.motion_map!r}")
