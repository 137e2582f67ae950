"""`svd render orbits`: meshes -> orbit videos with their camera poses, and a manifest to pack.

Output folder:
    <id>/views/000.png ...   RGB views composited on the background (what training and eval see)
    <id>/masks/000.png ...   the renderer's alpha (the object's silhouette)
    <id>/orbit.mp4           the views as a video (frame k = view k), at `fps`
    <id>/poses.json          cameras as Blender rendered them (see cameras.py for conventions),
                             written last: an object folder with it is done, and a rerun skips it
    orbits.parquet           one clip per orbit (svdcli manifest), for `svd pack`; its
                             `orbit_camera` column carries the poses into the shards' json
    render.json              settings, counts and every failed object with its reason

Per object the random draws (elevation in a range, start azimuth, HDRI) come from (seed, object
id), so a rerun or a different object set renders the same views of each object. Settings are
fingerprinted: a folder rendered with other settings is refused unless --overwrite.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from svdcli.errors import SvdError
from svdcli.render.cameras import Orbit, fit_distance, intrinsics, orbit_poses

MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl", ".fbx")
HDRI_SUFFIXES = (".hdr", ".exr")
POSE_TOLERANCE = 1e-4  # Blender stores matrices in float32: a recorded pose differs from ours by ~1e-7


@dataclass
class RenderSettings:
    """Everything that changes the renders (it feeds the fingerprint)."""

    views: int = 21                          # SVD paper sec. 4.5 / app. D.6: 21 frames per orbit
    resolution: int = 576                    # app. D.6: 576x576
    elevation: tuple[float, float] = (-5.0, 30.0)  # sec. 4.5: uniform in [-5, 30] degrees; (e, e) fixes it
    fov_deg: float = 49.134                  # Blender's default camera (35 mm lens, 32 mm sensor); not in the paper
    distance: float | None = None            # None: fit_distance(fov) (the unit box never leaves the frame)
    start_azimuth: float | None = 0.0        # None: uniform in [0, 360) per object
    samples: int = 64                        # Cycles samples per pixel
    denoise: bool = True                     # Cycles' OpenImageDenoise
    background: tuple[int, int, int] = (255, 255, 255)
    fps: float = 7.0                         # the orbit video's rate (SVD's default fps_id 6)
    seed: int = 0
    hdri: str | None = None                  # folder of .hdr/.exr maps, one drawn per object (paper: random HDRI)
    ambient: float = 0.6                     # without HDRIs: grey world light ...
    sun_strength: float = 2.0                # ... and a sun fixed in the world

    def validate(self) -> None:
        lo, hi = self.elevation
        if lo > hi:
            raise SvdError(f"--elevation {lo:g}:{hi:g}: the low end is above the high end")
        if self.resolution < 8 or self.views < 1 or self.samples < 1 or self.fps <= 0:
            raise SvdError("--resolution must be >= 8, --views and --samples >= 1, --fps > 0")
        if self.resolution % 2:
            raise SvdError(f"--resolution {self.resolution} must be even (H.264 4:2:0 video)")
        Orbit(self.views, lo, self.distance or fit_distance(self.fov_deg), self.fov_deg)  # bounds checks
        Orbit(self.views, hi, self.distance or fit_distance(self.fov_deg), self.fov_deg)
        if self.hdri and not hdri_files(self.hdri):
            raise SvdError(f"--hdri {self.hdri}: no .hdr or .exr files there")


@dataclass
class RenderSummary:
    out: Path
    rendered: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    failed: list[dict] = field(default_factory=list)   # {"id", "mesh", "error"}
    seconds: float = 0.0
    render_seconds: float = 0.0                        # Blender's own time, summed over objects
    views: int = 0                                     # views rendered by this run


def find_meshes(folder: Path) -> dict[str, Path]:
    """id -> mesh file for every mesh under `folder` (recursively; id = file stem)."""
    if not folder.is_dir():
        raise SvdError(f"--objects {folder}: not a folder of meshes ({', '.join(MESH_SUFFIXES)})")
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file()):
        other = found.setdefault(path.stem, path)
        if other != path:
            raise SvdError(f"two meshes have the id {path.stem!r}: {other} and {path}; rename one")
    if not found:
        raise SvdError(f"--objects {folder}: no mesh files ({', '.join(MESH_SUFFIXES)}) in it")
    return found


def hdri_files(folder: str) -> list[Path]:
    return sorted(p for p in Path(folder).expanduser().glob("*") if p.suffix.lower() in HDRI_SUFFIXES)


def object_orbit(settings: RenderSettings, object_id: str) -> tuple[Orbit, str | None]:
    """The orbit (and HDRI) of one object, drawn from (seed, id)."""
    rng = random.Random(f"{settings.seed}:{object_id}")
    lo, hi = settings.elevation
    elevation = lo if lo == hi else rng.uniform(lo, hi)
    start = settings.start_azimuth if settings.start_azimuth is not None else rng.uniform(0.0, 360.0)
    hdri = None
    if settings.hdri:
        hdri = str(rng.choice(hdri_files(settings.hdri)).resolve())
    distance = settings.distance or fit_distance(settings.fov_deg)
    return Orbit(settings.views, elevation, distance, settings.fov_deg, start), hdri


def fingerprint(settings: RenderSettings) -> str:
    return hashlib.sha1(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()[:16]


def prepare_out(out: Path, settings: RenderSettings, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SvdError(f"--out {out} is a file; pass a folder")
    out.mkdir(parents=True, exist_ok=True)
    record = out / "render.json"
    if record.exists():
        try:
            old = json.loads(record.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            old = None
        if old != fingerprint(settings) and not overwrite:
            raise SvdError(f"{out} holds orbits rendered with other settings (or an unreadable render.json); "
                           "use a new --out, or --overwrite to render every object again")
        if old != fingerprint(settings):
            for poses in out.glob("*/poses.json"):
                poses.unlink()  # the old renders no longer count as done


def done(out: Path, object_id: str, settings: RenderSettings) -> bool:
    try:
        return json.loads((out / object_id / "poses.json").read_text())["fingerprint"] == fingerprint(settings)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def render_orbits(objects: Path, out: Path, settings: RenderSettings, *, workers: int = 1,
                  blender: str | Path | None = None, overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> RenderSummary:
    """Render every mesh under `objects` into `out` (see the module docstring); `progress(done,
    total)` is called as objects finish."""
    from svdcli.render.blender import WorkerJob, find_blender, run_workers

    start = time.perf_counter()
    settings.validate()
    meshes = find_meshes(Path(objects))
    exe = find_blender(blender)
    out = Path(out)
    prepare_out(out, settings, overwrite)
    summary = RenderSummary(out, resumed=[i for i in meshes if done(out, i, settings)])
    todo = [i for i in meshes if i not in summary.resumed]
    workers = max(1, min(workers, len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    base = {"resolution": settings.resolution, "samples": settings.samples, "denoise": settings.denoise,
            "fov_deg": settings.fov_deg, "ambient": settings.ambient, "sun_strength": settings.sun_strength,
            "threads": threads}
    plans = {i: object_orbit(settings, i) for i in todo}
    jobs = [WorkerJob([], dict(base)) for _ in range(workers)]
    for n, object_id in enumerate(todo):
        orbit, hdri = plans[object_id]
        job = jobs[n % workers]
        job.objects.append({"id": object_id, "mesh": str(meshes[object_id].resolve()),
                            "out": str(out / f".{object_id}.tmp" / "raw"),
                            "poses": [c2w.tolist() for c2w in orbit_poses(orbit)], "hdri": hdri})
    jobs = [j for j in jobs if j.objects]
    total = len(meshes)
    if progress:
        progress(len(summary.resumed), total)

    def on_report(report: dict) -> None:
        object_id = report["id"]
        if report["ok"]:
            try:
                finish_object(out, object_id, meshes[object_id], plans[object_id], report, settings)
                summary.rendered.append(object_id)
                summary.render_seconds += report.get("seconds", 0.0)
                summary.views += settings.views
            except SvdError as exc:
                report = {**report, "ok": False, "error": str(exc)}
        if not report["ok"]:
            summary.failed.append({"id": object_id, "mesh": str(meshes[object_id]), "error": report["error"]})
            shutil.rmtree(out / f".{object_id}.tmp", ignore_errors=True)
        if progress:
            progress(len(summary.resumed) + len(summary.rendered) + len(summary.failed), total)

    run_workers(jobs, exe, on_report)
    finished = [i for i in meshes if done(out, i, settings)]
    from svdcli.render.manifest import write_orbit_manifest

    if finished:
        write_orbit_manifest(out, finished, settings)
    summary.seconds = time.perf_counter() - start
    (out / "render.json").write_text(json.dumps({
        "fingerprint": fingerprint(settings), "settings": asdict(settings), "objects": len(meshes),
        "done": len(finished), "failed": summary.failed, "blender": str(exe)}, indent=1))
    return summary


def finish_object(out: Path, object_id: str, mesh: Path, plan: tuple[Orbit, str | None], report: dict,
                  settings: RenderSettings) -> None:
    """Blender's RGBA views -> views/, masks/, orbit.mp4 and (last) poses.json, then the folder
    takes its place; the poses Blender reports must be the planned ones."""
    from PIL import Image

    from svdcli.video.write import write_frames

    orbit, hdri = plan
    tmp = out / f".{object_id}.tmp"
    check_recorded(report["cameras"], orbit, settings)
    views, masks = [], []
    for k in range(settings.views):
        rgba = np.asarray(Image.open(tmp / "raw" / f"{k:03d}.png").convert("RGBA"))
        rgb, alpha = composite(rgba, settings.background)
        views.append(rgb)
        masks.append(alpha)
    for name, images in (("views", views), ("masks", masks)):
        (tmp / name).mkdir(exist_ok=True)
        for k, image in enumerate(images):
            Image.fromarray(image).save(tmp / name / f"{k:03d}.png")
    write_frames(tmp / "orbit.mp4", np.stack(views), settings.fps, crf=12)
    shutil.rmtree(tmp / "raw")
    poses = {
        "fingerprint": fingerprint(settings), "object": object_id, "mesh": str(mesh.resolve()),
        "convention": "world Z up; c2w: camera looks along -Z, +Y up (Blender/OpenGL); K: pixels from the "
                      "top-left corner, centres at +0.5, v down (u = cx + fx x/-z, v = cy - fy y/-z)",
        "views": settings.views, "resolution": settings.resolution, "fps": settings.fps,
        "elevation_deg": orbit.elevation_deg, "distance": orbit.distance, "fov_deg": orbit.fov_deg,
        "start_azimuth_deg": orbit.start_azimuth_deg, "hdri": hdri, "background": list(settings.background),
        "normalisation": report["normalisation"],
        "frames": [{"view": k, "azimuth_deg": a, "c2w": cam["c2w"], "K": cam["K"]}
                   for k, (a, cam) in enumerate(zip(orbit.azimuths_deg, report["cameras"]))],
    }
    (tmp / "poses.json").write_text(json.dumps(poses, indent=1))
    final = out / object_id
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def check_recorded(cameras: list[dict], orbit: Orbit, settings: RenderSettings) -> None:
    """Blender's matrix_world and K after each render against the planned pose and intrinsics."""
    planned = orbit_poses(orbit)
    K = intrinsics(orbit.fov_deg, settings.resolution, settings.resolution)
    if len(cameras) != len(planned):
        raise SvdError(f"Blender reported {len(cameras)} cameras for {len(planned)} views")
    for k, (cam, c2w) in enumerate(zip(cameras, planned)):
        pose_err = float(np.abs(np.asarray(cam["c2w"]) - c2w).max())
        k_err = float(np.abs(np.asarray(cam["K"]) - K).max() / K[0, 0])
        if pose_err > POSE_TOLERANCE or k_err > POSE_TOLERANCE:
            raise SvdError(f"view {k}: Blender's camera differs from the planned one (pose by {pose_err:.2e}, "
                           f"focal/centre by {k_err:.2e} relative)")


def composite(rgba: np.ndarray, background: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Straight-alpha RGBA (H, W, 4) uint8 over `background` -> RGB uint8, and the alpha."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + np.asarray(background, np.float32) * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), rgba[..., 3].copy()
