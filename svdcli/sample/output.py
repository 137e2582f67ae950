"""Write sampled frames as an mp4, a gif or a folder of png frames."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from svdcli.errors import SvdError

FORMATS = ("mp4", "gif", "png")


def output_format(out: Path, fmt: str | None) -> str:
    """The format asked for, else the one the file name implies (a name without suffix: png frames)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise SvdError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    suffix = out.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return suffix
    if suffix:
        raise SvdError(f"cannot tell the output format from {out.name!r}; use .mp4, .gif or --format")
    return "png"


def output_path(out: Path, fmt: str) -> Path:
    """Where `fmt` output goes: the file with the format's suffix, or a folder for png frames."""
    return out.with_suffix("") if fmt == "png" else out.with_suffix("." + fmt)


def write_video(frames: np.ndarray, out: str | Path, fps: float, fmt: str | None = None) -> Path:
    """Write (T, H, W, 3) uint8 frames; returns the file (or folder, for png) written."""
    from svdcli.video.write import write_frames

    out = Path(out)
    fmt = output_format(out, fmt)
    path = output_path(out, fmt)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if fmt == "png":
        return _write_pngs(frames, path)
    # written aside and renamed: a full disk leaves an earlier video of that name whole
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        if fmt == "mp4":  # near-lossless: the clip is short and users judge the model, not the encoder
            write_frames(tmp, frames, fps, crf=12)
        else:
            _write_gif(frames, tmp, fps)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_gif(frames: np.ndarray, path: Path, fps: float) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return path


def _write_pngs(frames: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{i:04d}.png")
    return folder
