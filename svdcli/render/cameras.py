"""Orbit cameras: poses on a circle around the object, the pinhole intrinsics, projection.

Conventions (written into every poses.json):
- world: Blender's, right-handed, +Z up; objects are normalised so their bounding box is centred
  at the origin with its longest side 1 (the Objaverse rendering scripts' normalisation);
- camera position at azimuth a, elevation e, distance d: d (cos e sin a, -cos e cos a, sin e), so
  azimuth 0 looks at the object's front (Blender's front view, from -Y) and the azimuth grows
  counter-clockwise seen from above (the camera walks towards the object's right side);
- `c2w` is the camera-to-world matrix in Blender's / OpenGL's camera convention: the camera
  looks along its -Z axis, +Y is up on the image, +X right;
- `K` maps camera rays to pixel coordinates with the origin at the image's top-left corner and
  pixel centres at +0.5 (OpenCV's convention): u = cx + fx x/(-z), v = cy - fy y/(-z).
Pure numpy: no Blender here, so poses are planned (and checked) outside the renderer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from svdcli.errors import SvdError

UNIT_BOX_RADIUS = math.sqrt(3.0) / 2.0  # circumscribed sphere of the normalised (unit) bounding box


@dataclass(frozen=True)
class Orbit:
    """One circular orbit: `views` cameras at one elevation, evenly spaced in azimuth."""

    views: int
    elevation_deg: float
    distance: float
    fov_deg: float
    start_azimuth_deg: float = 0.0

    def __post_init__(self) -> None:
        if self.views < 1:
            raise SvdError(f"an orbit needs at least one view, not {self.views}")
        if not -89.0 <= self.elevation_deg <= 89.0:
            raise SvdError(f"elevation {self.elevation_deg:g} degrees is outside [-89, 89] (the camera's "
                           "up direction is undefined at the poles)")
        if not 1.0 <= self.fov_deg <= 170.0:
            raise SvdError(f"field of view {self.fov_deg:g} degrees is outside [1, 170]")
        if self.distance <= UNIT_BOX_RADIUS:
            raise SvdError(f"camera distance {self.distance:g} is inside the normalised object "
                           f"(its bounding sphere has radius {UNIT_BOX_RADIUS:.3f})")

    @property
    def azimuths_deg(self) -> list[float]:
        """Azimuth of view k: start + 360 k / views (the orbit closes after the last view)."""
        return [(self.start_azimuth_deg + 360.0 * k / self.views) % 360.0 for k in range(self.views)]


def fit_distance(fov_deg: float, radius: float = UNIT_BOX_RADIUS) -> float:
    """The nearest camera distance at which a sphere of `radius` at the origin stays inside the
    field of view from every direction: radius / sin(fov / 2)."""
    return radius / math.sin(math.radians(fov_deg) / 2.0)


def camera_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array([math.cos(e) * math.sin(a), -math.cos(e) * math.cos(a), math.sin(e)])


def look_at(position: np.ndarray, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world 4x4 (OpenGL camera convention) of a camera at `position` looking at `target`."""
    position = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-9:
        raise SvdError("the camera looks straight along the up axis; its roll is undefined")
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, position
    return c2w


def orbit_poses(orbit: Orbit) -> list[np.ndarray]:
    """The camera-to-world matrix of every view, in order."""
    return [look_at(camera_position(a, orbit.elevation_deg, orbit.distance)) for a in orbit.azimuths_deg]


def intrinsics(fov_deg: float, width: int, height: int) -> np.ndarray:
    """3x3 K of a camera whose horizontal field of view is `fov_deg` (square pixels, centred)."""
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def project(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> np.ndarray:
    """World points (N, 3) -> pixel coordinates (N, 2) (u right, v down; see the module docstring)."""
    points = np.asarray(points, dtype=np.float64)
    c2w = np.asarray(c2w, dtype=np.float64)
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]          # (N, 3) in camera axes: R^T (p - t)
    depth = -cam[:, 2]
    if np.any(depth <= 0):
        raise ValueError("a point lies behind the camera")
    u = K[0, 2] + K[0, 0] * cam[:, 0] / depth
    v = K[1, 2] - K[1, 1] * cam[:, 1] / depth
    return np.stack([u, v], axis=1)
