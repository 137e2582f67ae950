"""Helpers of the render tests: the Blender to use (or a skip), and silhouette corners measured
to a fraction of a pixel."""
from __future__ import annotations

import numpy as np
import pytest


def blender_or_skip():
    from svdcli.errors import SvdError
    from svdcli.render.blender import find_blender

    try:
        return find_blender()
    except SvdError as exc:
        pytest.skip(f"no Blender to render with ({str(exc)[:80]}...)")


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Vertices of the 2-D convex hull, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(map(tuple, points))

    def turn(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(reversed(pts))
    return np.array(lower[:-1] + upper[:-1])


def edge_points(alpha: np.ndarray, a: np.ndarray, b: np.ndarray, samples: int = 24, reach: float = 4.0) -> np.ndarray:
    """Sub-pixel points of the silhouette edge near the segment a-b (pixel coordinates, v down).

    Along the segment's middle, integrate the alpha (bilinear) across the edge from `reach` px
    inside to `reach` px outside: the covered length puts the edge, whatever the renderer's pixel
    filter, as long as it is symmetric. The segment only says where to look.
    """
    from scipy.ndimage import map_coordinates

    d = (b - a) / np.linalg.norm(b - a)
    normal = np.array([d[1], -d[0]])
    centre = alpha.shape[1] / 2, alpha.shape[0] / 2
    mid = (a + b) / 2
    if np.dot(mid - centre, normal) < 0:         # point it away from the object's middle
        normal = -normal
    steps = np.linspace(-reach, reach, 81)
    step = steps[1] - steps[0]
    out = []
    for t in np.linspace(0.2, 0.8, samples):
        p = a + t * (b - a)
        line = p[None] + steps[:, None] * normal[None]           # (81, 2) in (u, v)
        # pixel (row i, col j) has its centre at (u, v) = (j + 0.5, i + 0.5)
        vals = map_coordinates(alpha, [line[:, 1] - 0.5, line[:, 0] - 0.5], order=1, mode="nearest")
        covered = vals.sum() * step                              # length inside the object
        out.append(p + normal * (covered - reach))
    return np.array(out)


def fit_line(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre)
    return centre, vt[0]


def intersect(l1, l2) -> np.ndarray:
    (p, d), (q, e) = l1, l2
    t = np.linalg.solve(np.stack([d, -e], axis=1), q - p)
    return p + t[0] * d


def measured_corners(alpha: np.ndarray, predicted_hull: np.ndarray) -> np.ndarray:
    """The silhouette's corners: intersections of lines fitted to the measured edges next to each
    predicted hull vertex."""
    n = len(predicted_hull)
    lines = [fit_line(edge_points(alpha, predicted_hull[i], predicted_hull[(i + 1) % n])) for i in range(n)]
    return np.array([intersect(lines[i - 1], lines[i]) for i in range(n)])
