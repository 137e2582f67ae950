"""The conditioning image of image-conditioned families: read it, check it, bring it to the size
the model samples at."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svdcli.errors import SvdError

LATENT_FACTOR = 64  # SVD: the UNet downsamples the f8 latent 3 times, so pixel sizes divide by 64


@dataclass
class PreparedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 at the sampling size
    source_size: tuple[int, int]  # (width, height) as read
    note: str | None  # what was done to fit the size, for the user; None when nothing was


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; transparency is composited on white. Raises SvdError on a bad file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise SvdError(f"conditioning image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(background, rgba)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SvdError(f"cannot read {path} as an image (corrupt or unsupported format): {exc}") from None


def fit_size(width: int, height: int, multiple: int = LATENT_FACTOR) -> tuple[int, int]:
    """Round a requested (width, height) down to multiples of `multiple`, the sizes the model accepts."""
    w, h = (max(multiple, v - v % multiple) for v in (width, height))
    return w, h


def prepare_image(pixels: np.ndarray, width: int, height: int) -> PreparedImage:
    """Scale to cover (width, height) and centre-crop the excess, so nothing is squashed."""
    import cv2

    src_h, src_w = pixels.shape[:2]
    if (src_w, src_h) == (width, height):
        return PreparedImage(pixels, (src_w, src_h), None)
    scale = max(width / src_w, height / src_h)
    new_w, new_h = max(width, round(src_w * scale)), max(height, round(src_h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(pixels, (new_w, new_h), interpolation=interp)
    x0, y0 = (new_w - width) // 2, (new_h - height) // 2
    out = np.ascontiguousarray(resized[y0:y0 + height, x0:x0 + width])
    note = f"resized the {src_w}x{src_h} image to {width}x{height}"
    if abs(src_w / src_h - width / height) > 0.01:
        cut = "left and right" if new_w > width else "top and bottom"
        note += f", cropping {max(new_w - width, new_h - height)} px from the {cut} to keep the aspect ratio"
    return PreparedImage(out, (src_w, src_h), note)


def to_model_range(pixels: np.ndarray):
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 tensor in [-1, 1], the VAE's input range."""
    import torch

    x = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0  # (3, H, W)
    return (x * 2.0 - 1.0).unsqueeze(0)
