"""The orbit manifest: one clip per rendered orbit, in the manifest schema `svd pack` reads.

Its clip columns say where the orbit video is, as `svd curate cuts` would for a video; two
columns of its own carry the object: `mesh_path`, and `orbit_camera`, the poses.json of the
orbit (elevation, distance, field of view, per view the azimuth, camera-to-world matrix and K),
which `svd pack` copies into every sample's json (the frames it packs, in order) and the loader
turns into the elevation the multi-view stage is conditioned on.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from svdcli.manifest.schema import COLUMNS, Column

ORBIT_COLUMNS = ("mesh_path", "orbit_camera")


def _render_columns() -> list[Column]:
    import pyarrow as pa

    return [
        Column("mesh_path", pa.string(), "render", "the mesh file an orbit was rendered from"),
        Column("orbit_camera", pa.string(), "render", "poses.json of the orbit (JSON): elevation_deg, distance, "
               "fov_deg and per view azimuth_deg, c2w (Blender/OpenGL camera) and K"),
    ]


COLUMNS.add_source(_render_columns)


def orbit_row(folder: Path, poses: dict) -> dict:
    """The manifest row of one rendered object folder."""
    video = (folder / "orbit.mp4").resolve()
    n, fps, size = poses["views"], float(poses["fps"]), int(poses["resolution"])
    video_id = hashlib.sha1(str(video).encode()).hexdigest()[:16]
    return {
        "clip_id": f"{video_id}_0_{n}", "video_id": video_id, "video_path": str(video),
        "start_time": 0.0, "end_time": n / fps, "start_frame": 0, "end_frame": n, "num_frames": n,
        "fps": fps, "width": size, "height": size, "rotation": 0, "video_duration": n / fps,
        "status": "ok", "keep": True, "mesh_path": poses["mesh"], "orbit_camera": json.dumps(poses),
    }


def write_orbit_manifest(out: Path, object_ids: list[str], settings) -> Path:
    """orbits.parquet in `out` for the finished objects `object_ids`."""
    from dataclasses import asdict

    import svdcli.curate.stages  # noqa: F401 - declares `status` and `keep` in the manifest schema
    from svdcli.manifest.io import table_from_rows, write_manifest

    rows = [orbit_row(out / i, json.loads((out / i / "poses.json").read_text())) for i in object_ids]
    columns = [c for c in rows[0] if c in COLUMNS]
    return write_manifest(table_from_rows(rows, columns), out / "orbits.parquet",
                          record={"stage": "render", "settings": asdict(settings)})
