"""Camera motion of a clip from the motion stage's Farneback flow fields: a label and a confidence.

Each flow field (H, W, 2), in analysis px per 1/15 s (the unit of `motion_score`), is fitted by
least squares with the global affine motion of a camera looking at a distant scene:

    u(x, y) = t_x + a x + b y,    v(x, y) = t_y + c x + d y      (x, y from the frame centre)

whose parts are the translation (t_x, t_y), the divergence a + d (zoom: content expands when the
camera zooms in), the curl c - b (roll about the optical axis) and the shear (a - d, b + c).
Each part is expressed as a displacement in px at the mean radius r of the frame's points, so
all compare in one unit: T = |t|, Z = |a + d| r / 2, R = |c - b| r / 2, S = |(a - d, b + c)| r / 2,
and E = the RMS residual of the fit (independent motion: people, water, parallax).

Labels (image y points down; flow goes from a frame to the one shown 1/15 s later):
- `static`: mean flow magnitude below `static_below` (0.25, the paper's motion threshold);
- the dominant part among T, Z, R when it carries at least `dominance` (half) of T+Z+R+S+E:
  T -> `pan_left` / `pan_right` / `tilt_up` / `tilt_down` when one axis is at least twice the
  other (content moving left = the camera pans right; content moving down = the camera tilts
  up), Z -> `zoom_in` (divergence > 0) / `zoom_out`, R -> `rotate`;
- otherwise `complex` (diagonal translation, shear, independent motion, or no dominant part).
A clip's label is that of the median parameters over its pairs; its confidence is the dominant
part's share of the motion, times the fraction of the clip's pairs that carry the same label
(a static clip: the fraction of its pairs that are static).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out",
          "rotate", "complex")
PARAMS = ("tx", "ty", "div", "curl", "shear", "residual", "magnitude", "radius")
BORDER = 0.05  # fraction of each side left out of the fit: Farneback is least reliable there
STEP = 4       # fit on every 4th pixel in each direction: the same parameters, 16x less work


@dataclass(frozen=True)
class CameraConfig:
    static_below: float = 0.25  # mean flow, analysis px per 1/15 s
    dominance: float = 0.5      # share of the motion the dominant part must carry
    axis_ratio: float = 2.0     # pan / tilt: one translation axis at least this times the other


def flow_parameters(flow: np.ndarray) -> dict[str, float]:
    """Least-squares global affine motion of one flow field (H, W, 2); see the module docstring."""
    h, w = flow.shape[:2]
    bh, bw = int(h * BORDER), int(w * BORDER)
    f = flow[bh:h - bh:STEP, bw:w - bw:STEP].astype(np.float64)  # (h', w', 2)
    ys, xs = np.mgrid[bh:h - bh:STEP, bw:w - bw:STEP].astype(np.float64)
    x, y = xs - (w - 1) / 2, ys - (h - 1) / 2
    design = np.stack([np.ones_like(x), x, y], axis=-1).reshape(-1, 3)  # (N, 3)
    uv = f.reshape(-1, 2)                                               # (N, 2)
    coef, *_ = np.linalg.lstsq(design, uv, rcond=None)                  # (3, 2): rows 1, x, y
    (tx, ty), (a, c), (b, d) = coef
    residual = uv - design @ coef
    return {"tx": float(tx), "ty": float(ty), "div": float(a + d), "curl": float(c - b), "shear": float(np.hypot(a - d, b + c)),
            "residual": float(np.sqrt((residual ** 2).sum(1).mean())),
            "magnitude": float(np.sqrt((uv ** 2).sum(1)).mean()),
            "radius": float(np.sqrt(x ** 2 + y ** 2).mean())}


def parts(p: dict[str, float]) -> dict[str, float]:
    """The motion parts as px at the mean radius: translation, zoom, rotation, shear, residual."""
    r = p["radius"]
    return {"translation": float(np.hypot(p["tx"], p["ty"])), "zoom": float(abs(p["div"]) * r / 2),
            "rotation": float(abs(p["curl"]) * r / 2), "shear": p["shear"] * r / 2, "residual": p["residual"]}


def classify(p: dict[str, float], cfg: CameraConfig = CameraConfig()) -> tuple[str, float]:
    """(label, share of the motion its part carries) for one set of parameters."""
    if p["magnitude"] < cfg.static_below:
        return "static", 1.0
    share = parts(p)
    total = sum(share.values()) or 1.0
    main = max(("translation", "zoom", "rotation"), key=share.get)
    frac = share[main] / total
    if frac < cfg.dominance:
        return "complex", float(1.0 - frac)
    if main == "zoom":
        return ("zoom_in" if p["div"] > 0 else "zoom_out"), float(frac)
    if main == "rotation":
        return "rotate", float(frac)
    tx, ty = abs(p["tx"]), abs(p["ty"])
    if tx >= cfg.axis_ratio * ty:
        return ("pan_right" if p["tx"] < 0 else "pan_left"), float(frac)
    if ty >= cfg.axis_ratio * tx:
        return ("tilt_up" if p["ty"] > 0 else "tilt_down"), float(frac)
    return "complex", float(frac)


def clip_camera_motion(pairs: list[dict[str, float]], cfg: CameraConfig = CameraConfig()) -> tuple[str, float]:
    """A clip's (label, confidence) from the parameters of its flow pairs (at least one)."""
    if not pairs:
        raise ValueError("camera motion needs at least one flow pair")
    median = {k: float(np.median([p[k] for p in pairs])) for k in PARAMS}
    label, frac = classify(median, cfg)
    agree = np.mean([classify(p, cfg)[0] == label for p in pairs])
    return label, float(frac * agree)
