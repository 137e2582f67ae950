"""Camera motion of a clip from the motion stage's Farneback flow fields: a label and a confidence.

Each flow field (H, W, 2), in analysis px per 1/15 s (the unit of `motion_score`), is fitted with
the global affine motion of a camera looking at a distant scene:

    u(x, y) = t_x + a x + b y,    v(x, y) = t_y + c x + d y      (x, y from the frame centre)

whose parts are the translation (t_x, t_y), the divergence a + d (zoom: content expands when the
camera zooms in), the curl c - b (roll about the optical axis) and the shear (a - d, b + c).
The fit is robust: only textured points count (flat areas and letterbox bars carry no flow),
it starts from the median translation and is refitted on the points that follow it (up to
FIT_ROUNDS times; a round that keeps the points of the last fit ends it, as every further
round would repeat that fit), so a subject moving in front of the background does not drag the
camera's motion along. `inliers` is the share of textured points within 1 px (+25% of the local
motion) of the fit.

Each part is expressed as a displacement in px at the mean radius r of the frame's points, so
all compare in one unit: T = |t|, Z = |a + d| r / 2, R = |c - b| r / 2, S = |(a - d, b + c)| r / 2.

Labels (image y points down; flow goes from a frame to the one shown 1/15 s later):
- `static`: T + Z + R + S below `static_below` (0.25, the paper's motion threshold), whatever
  the subject does;
- `complex` when fewer than half of the textured points follow the fit (several motions);
- otherwise the dominant part among T, Z, R if it carries at least half of T + Z + R + S:
  T -> `pan_left` / `pan_right` / `tilt_up` / `tilt_down` when one axis is at least twice the
  other (content moving left = the camera pans right; content moving down = the camera tilts
  up), Z -> `zoom_in` (divergence > 0) / `zoom_out`, R -> `rotate`; else `complex`.
A clip's label is that of the median parameters over its pairs; its confidence is the dominant
part's share times the inlier share, times the fraction of the clip's pairs with the same label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABELS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out",
          "rotate", "complex")
PARAMS = ("tx", "ty", "div", "curl", "shear", "residual", "magnitude", "radius", "inliers", "support")
BORDER = 0.05  # fraction of each side left out of the fit: Farneback is least reliable there
STEP = 4       # fit on every 4th pixel in each direction: the same parameters, 16x less work
TEXTURE = 12.0  # mean Sobel gradient magnitude (uint8 gray) below which a point has no texture
INLIER_PX = 1.0     # a point follows the global motion when it is within this (px per 1/15 s)
INLIER_SHARE = 0.25  # ... plus this share of the global motion's own length there
FIT_ROUNDS = 4
MIN_POINTS = 50


@dataclass(frozen=True)
class CameraConfig:
    static_below: float = 0.25  # camera motion (translation + zoom + rotation + shear), px per 1/15 s
    dominance: float = 0.5      # share of the camera motion the dominant part must carry
    min_inliers: float = 0.5    # share of textured points that must follow the global motion
    min_support: float = 0.02   # textured share of the frame below which nothing is measured
    axis_ratio: float = 2.0     # pan / tilt: one translation axis at least this times the other


def flow_parameters(flow: np.ndarray, gray: np.ndarray | None = None) -> dict[str, float]:
    """Robust global affine motion of one flow field (H, W, 2); see the module docstring.

    `gray` (H, W) is the first frame: flow is measured only where it has texture (a black bar
    or a white wall moves with any flow, so it says nothing). The fit starts from the median
    translation and keeps the points that follow it (`inliers`), so a subject moving in front
    of the background does not pull the camera's motion with it.
    """
    h, w = flow.shape[:2]
    bh, bw = int(h * BORDER), int(w * BORDER)
    f = flow[bh:h - bh:STEP, bw:w - bw:STEP].astype(np.float64)  # (h', w', 2)
    ys, xs = np.mgrid[bh:h - bh:STEP, bw:w - bw:STEP].astype(np.float64)
    x, y = xs - (w - 1) / 2, ys - (h - 1) / 2
    design = np.stack([np.ones_like(x), x, y], axis=-1).reshape(-1, 3)  # (N, 3)
    uv = f.reshape(-1, 2)                                               # (N, 2)
    textured = _textured(gray)[bh:h - bh:STEP, bw:w - bw:STEP].reshape(-1) if gray is not None \
        else np.ones(len(uv), bool)
    params = {"support": float(textured.mean()), "radius": float(np.sqrt(x ** 2 + y ** 2).mean())}
    if textured.sum() < MIN_POINTS:
        return params | dict.fromkeys(("tx", "ty", "div", "curl", "shear", "residual", "magnitude"), 0.0) \
            | {"inliers": 0.0}
    coef = np.zeros((3, 2))
    coef[0] = np.median(uv[textured], axis=0)  # start: the median translation
    inlier, fitted_on = textured, None
    for _ in range(FIT_ROUNDS):
        err = np.sqrt(((uv - design @ coef) ** 2).sum(1))
        inlier = textured & (err < max(0.5, 2.5 * float(np.median(err[inlier]))))
        if inlier.sum() < MIN_POINTS:
            break
        if fitted_on is not None and np.array_equal(inlier, fitted_on):
            break  # the fit on these points is `coef` already: every further round would repeat it
        coef, *_ = np.linalg.lstsq(design[inlier], uv[inlier], rcond=None)  # (3, 2): rows 1, x, y
        fitted_on = inlier
    (tx, ty), (a, c), (b, d) = coef
    fit = design @ coef
    err = np.sqrt(((uv - fit) ** 2).sum(1))[textured]
    near = err < INLIER_PX + INLIER_SHARE * np.sqrt((fit[textured] ** 2).sum(1))
    return params | {
        "tx": float(tx), "ty": float(ty), "div": float(a + d), "curl": float(c - b),
        "shear": float(np.hypot(a - d, b + c)), "residual": float(np.sqrt((err ** 2).mean())),
        "magnitude": float(np.sqrt((uv[textured] ** 2).sum(1)).mean()),
        "inliers": float(near.mean())}


def _textured(gray: np.ndarray) -> np.ndarray:
    """Where a frame has enough local contrast for optical flow to mean something."""
    import cv2

    g = gray.astype(np.float32)
    grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    return cv2.blur(grad, (7, 7)) > TEXTURE


def parts(p: dict[str, float]) -> dict[str, float]:
    """The camera's motion parts as px at the mean radius: translation, zoom, rotation, shear."""
    r = p["radius"]
    return {"translation": float(np.hypot(p["tx"], p["ty"])), "zoom": float(abs(p["div"]) * r / 2),
            "rotation": float(abs(p["curl"]) * r / 2), "shear": float(p["shear"] * r / 2)}


def classify(p: dict[str, float], cfg: CameraConfig = CameraConfig()) -> tuple[str, float]:
    """(label, confidence in [0, 1]) for one set of parameters."""
    if p["support"] < cfg.min_support:
        return "static", 0.0  # nothing textured to measure
    share = parts(p)
    total = sum(share.values())
    if total < cfg.static_below:
        return "static", float(p["inliers"])
    if p["inliers"] < cfg.min_inliers:
        return "complex", float(1.0 - p["inliers"])
    main = max(("translation", "zoom", "rotation"), key=share.get)
    frac = share[main] / total
    conf = float(frac * p["inliers"])
    if frac < cfg.dominance:
        return "complex", float((1.0 - frac) * p["inliers"])
    if main == "zoom":
        return ("zoom_in" if p["div"] > 0 else "zoom_out"), conf
    if main == "rotation":
        return "rotate", conf
    tx, ty = abs(p["tx"]), abs(p["ty"])
    if tx >= cfg.axis_ratio * ty:
        return ("pan_right" if p["tx"] < 0 else "pan_left"), conf
    if ty >= cfg.axis_ratio * tx:
        return ("tilt_up" if p["ty"] > 0 else "tilt_down"), conf
    return "complex", conf


def clip_camera_motion(pairs: list[dict[str, float]], cfg: CameraConfig = CameraConfig()) -> tuple[str, float]:
    """A clip's (label, confidence) from the parameters of its flow pairs (at least one)."""
    if not pairs:
        raise ValueError("camera motion needs at least one flow pair")
    median = {k: float(np.median([p[k] for p in pairs])) for k in PARAMS}
    label, frac = classify(median, cfg)
    agree = np.mean([classify(p, cfg)[0] == label for p in pairs])
    return label, float(frac * agree)
