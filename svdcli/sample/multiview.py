"""`svd sample --multiview`: a multi-view model's frames written as the views of an orbit.

    OUT/views/000.png ...   view k, the camera 360 k / N degrees round from the input view
    OUT/turntable.mp4       the views as a looping turntable video
    OUT/views.json          per view its azimuth relative to the input view, and the elevation

View 0 is the model's rendition of the input view (SVD-MV generates the whole orbit, the input
view first); `svd eval multiview` compares the views with ground-truth renders.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from svdcli.errors import SvdError


def check_out(out: Path) -> None:
    if out.suffix:
        raise SvdError(f"--multiview writes a folder (views/, turntable.mp4, views.json); {out} looks like a file")
    if out.exists() and not out.is_dir():
        raise SvdError(f"--out {out} is a file; --multiview writes a folder")


def write_views(frames: np.ndarray, out: str | Path, fps: float, elevation_deg: float) -> Path:
    """Write (N, H, W, 3) uint8 views; returns the folder."""
    from PIL import Image

    from svdcli.video.write import write_frames

    out = Path(out)
    check_out(out)
    (out / "views").mkdir(parents=True, exist_ok=True)
    n = len(frames)
    for k, frame in enumerate(frames):
        Image.fromarray(frame).save(out / "views" / f"{k:03d}.png")
    write_frames(out / "turntable.mp4", frames, fps, crf=12)
    record = {"views": n, "elevation_deg": elevation_deg, "fps": fps,
              "azimuth_from_input_deg": [360.0 * k / n for k in range(n)],
              "note": "view 0 is the input view; the camera turns as `svd render orbits` turns it"}
    (out / "views.json").write_text(json.dumps(record, indent=1))
    return out
