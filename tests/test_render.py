"""`svd render orbits`: the poses it plans and records, and renders that are geometrically right
(a known box's silhouette corners where its corners project, within a pixel)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from render_helpers import blender_or_skip, convex_hull, measured_corners
from svdcli.render.cameras import Orbit, camera_position, fit_distance, intrinsics, look_at, orbit_poses, project

BOX = (1.0, 0.6, 0.8)  # extents in the file = in Blender's axes (PLY imports without an axis change)


def box_corners(extents) -> np.ndarray:
    half = np.asarray(extents) / 2
    return np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half


def test_orbit_cameras_look_at_the_centre_from_the_planned_angles():
    orbit = Orbit(views=4, elevation_deg=20.0, distance=2.5, fov_deg=40.0, start_azimuth_deg=10.0)
    assert orbit.azimuths_deg == pytest.approx([10.0, 100.0, 190.0, 280.0])
    K = intrinsics(40.0, 64, 64)
    for a, c2w in zip(orbit.azimuths_deg, orbit_poses(orbit)):
        R, t = c2w[:3, :3], c2w[:3, 3]
        assert np.allclose(R.T @ R, np.eye(3), atol=1e-12) and np.linalg.det(R) == pytest.approx(1.0)
        assert np.linalg.norm(t) == pytest.approx(2.5)
        assert math.degrees(math.asin(t[2] / 2.5)) == pytest.approx(20.0)
        assert project(np.zeros((1, 3)), c2w, K)[0] == pytest.approx([32.0, 32.0])   # the centre
        assert R[2, 1] > 0                                                             # world up is image up
    # azimuth 0 sees the front (camera on -Y), 90 the right side (camera on +X)
    assert camera_position(0, 0, 1) == pytest.approx([0, -1, 0])
    assert camera_position(90, 0, 1) == pytest.approx([1, 0, 0])
    right = look_at(camera_position(0, 0, 3))[:3, 0]
    assert right == pytest.approx([1, 0, 0])        # from the front, +X is to the right of the image


def test_the_fitted_distance_keeps_the_unit_box_in_view():
    fov = 49.134
    d = fit_distance(fov)
    K = intrinsics(fov, 100, 100)
    corners = box_corners((1, 1, 1))
    for elevation in (-30, 0, 45):
        for c2w in orbit_poses(Orbit(12, elevation, d, fov)):
            uv = project(corners, c2w, K)
            assert uv.min() >= 0 and uv.max() <= 100


@pytest.fixture(scope="module")
def box_render(tmp_path_factory):
    blender = blender_or_skip()
    import trimesh

    from svdcli.render.orbits import RenderSettings, render_orbits

    folder = tmp_path_factory.mktemp("render")
    objects = folder / "objects"
    objects.mkdir()
    trimesh.creation.box(extents=BOX).export(str(objects / "box.ply"))
    settings = RenderSettings(views=4, resolution=96, elevation=(20.0, 20.0), start_azimuth=30.0, samples=8,
                              denoise=False)
    summary = render_orbits(objects, folder / "out", settings, blender=blender)
    assert not summary.failed, summary.failed
    return folder / "out", settings


def _mask(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path), dtype=np.float64) / 255.0


def test_a_box_renders_with_its_corners_within_a_pixel_of_their_projections(box_render):
    out, settings = box_render
    poses = json.loads((out / "box" / "poses.json").read_text())
    norm = poses["normalisation"]
    corners = (box_corners(BOX) - np.asarray(norm["centre"])) * norm["scale"]   # as Blender normalised it
    assert np.abs(corners).max() == pytest.approx(0.5)                          # longest side 1
    worst = 0.0
    for frame in poses["frames"]:
        uv = project(corners, np.asarray(frame["c2w"]), np.asarray(frame["K"]))
        hull = convex_hull(uv)                                   # a convex box's silhouette outline
        measured = measured_corners(_mask(out / "box" / "masks" / f"{frame['view']:03d}.png"), hull)
        err = np.linalg.norm(measured - hull, axis=1)
        worst = max(worst, float(err.max()))
        assert err.max() < 1.0, f"view {frame['view']}: corners off by {err.round(2)} px"
    # the check can fail: a camera 1.5 degrees off in azimuth misses a corner by more than a pixel
    frame = poses["frames"][1]
    wrong = look_at(camera_position(frame["azimuth_deg"] + 1.5, poses["elevation_deg"], poses["distance"]))
    hull = convex_hull(project(corners, wrong, np.asarray(frame["K"])))
    measured = measured_corners(_mask(out / "box" / "masks" / "001.png"), hull)
    assert np.linalg.norm(measured - hull, axis=1).max() > 1.0
    print(f"worst corner error {worst:.3f} px")


def test_recorded_poses_are_the_planned_orbit_and_the_manifest_carries_them(box_render):
    from svdcli.manifest.io import read_manifest

    out, settings = box_render
    poses = json.loads((out / "box" / "poses.json").read_text())
    orbit = Orbit(4, 20.0, fit_distance(settings.fov_deg), settings.fov_deg, 30.0)
    assert [f["azimuth_deg"] for f in poses["frames"]] == pytest.approx([30.0, 120.0, 210.0, 300.0])
    for frame, planned in zip(poses["frames"], orbit_poses(orbit)):
        # Blender keeps matrices in float32: a few float32 ulps of the camera distance (~2.1)
        assert np.abs(np.asarray(frame["c2w"]) - planned).max() < 16 * np.finfo(np.float32).eps * 2.1
        assert np.asarray(frame["K"]) == pytest.approx(intrinsics(settings.fov_deg, 96, 96), rel=1e-6)
    rows = read_manifest(out / "orbits.parquet").to_pylist()
    assert len(rows) == 1 and rows[0]["keep"] and rows[0]["num_frames"] == 4
    assert json.loads(rows[0]["orbit_camera"])["frames"][2]["c2w"] == poses["frames"][2]["c2w"]
    views = sorted((out / "box" / "views").glob("*.png"))
    assert len(views) == 4 and (out / "box" / "orbit.mp4").stat().st_size > 0


def test_a_broken_mesh_is_reported_and_the_rest_render_and_resume(tmp_path):
    blender = blender_or_skip()
    import trimesh

    from svdcli.errors import SvdError
    from svdcli.render.orbits import RenderSettings, render_orbits

    objects = tmp_path / "objects"
    objects.mkdir()
    trimesh.creation.icosphere(subdivisions=1).export(str(objects / "good.ply"))
    (objects / "broken.glb").write_bytes(b"not a gltf file")
    settings = RenderSettings(views=2, resolution=16, samples=1, denoise=False)
    first = render_orbits(objects, tmp_path / "out", settings, blender=blender)
    assert first.rendered == ["good"]
    assert [f["id"] for f in first.failed] == ["broken"] and first.failed[0]["error"]
    again = render_orbits(objects, tmp_path / "out", settings, blender=blender)
    assert again.resumed == ["good"] and again.rendered == []
    with pytest.raises(SvdError, match="other settings"):
        render_orbits(objects, tmp_path / "out", RenderSettings(views=3, resolution=16, samples=1), blender=blender)
