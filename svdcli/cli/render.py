"""`svd render`: orbit renders of 3-D objects for multi-view training (parse and dispatch only)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from svdcli.cli.common import console, fail, user_errors

app = typer.Typer(help="Render 3-D objects on camera orbits (multi-view training and evaluation data).",
                  no_args_is_help=True)

ORBITS_HELP = (
    "Render every mesh under --objects (.glb, .gltf, .obj, .ply, .stl, .fbx; Objaverse and Google "
    "Scanned Objects files load as they are) on a circular camera orbit with Blender's Cycles on the "
    "CPU, headless. Defaults follow the SVD paper's multi-view data (sec. 4.5, app. D.6): 21 views "
    "at 576x576, elevation drawn per object from [-5, 30] degrees. Objects are normalised (bounding "
    "box centred, longest side 1); the camera looks at the centre.\n\n"
    "Writes per object views/NNN.png (RGB on --background), masks/NNN.png (alpha), orbit.mp4 and "
    "poses.json (camera-to-world matrices and intrinsics as Blender rendered them; conventions in the "
    "file), plus orbits.parquet, a manifest for `svd pack` (the poses travel into each sample's json), "
    "and render.json. A rerun resumes: finished objects are skipped. An object that fails (a broken "
    "file) is listed with its reason and the others go on.\n\n"
    "Blender: a Python with the bpy wheel (`make setup` builds .venv-render), found via --blender, "
    "$SVD_BLENDER or .venv-render; a Blender binary works too.")


def _elevation(text: str) -> tuple[float, float]:
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: write DEG (fixed) or LOW:HIGH (uniform per object)") from None
    if len(parts) not in (1, 2):
        raise typer.BadParameter(f"{text!r}: write DEG or LOW:HIGH")
    return (parts[0], parts[-1])


def _colour(text: str) -> tuple[int, int, int]:
    try:
        rgb = tuple(int(v) for v in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        raise typer.BadParameter(f"{text!r}: write R,G,B with values 0-255, e.g. 255,255,255")
    return rgb


@app.command("orbits", help=ORBITS_HELP, no_args_is_help=True)
@user_errors
def orbits(
    objects: Path = typer.Option(..., "--objects", help="Folder of meshes (searched recursively; id = file stem)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    views: int = typer.Option(21, "--views", min=1, help="Views per orbit (paper: 21)."),
    resolution: int = typer.Option(576, "--resolution", min=8, help="Square image side in pixels (paper: 576)."),
    elevation: str = typer.Option("-5:30", "--elevation", help="Camera elevation in degrees: DEG fixes it, LOW:HIGH "
                                  "draws it per object (paper: -5:30)."),
    start_azimuth: str = typer.Option("0", "--start-azimuth", help="Azimuth of view 0 in degrees (0 = the object's "
                                      "front, Blender's -Y), or 'random' (per object)."),
    fov: float = typer.Option(49.134, "--fov", help="Horizontal field of view in degrees (default: Blender's 35 mm "
                              "camera; the paper gives none)."),
    distance: Optional[float] = typer.Option(None, "--distance", help="Camera distance in object units (default: "
                                             "the nearest at which the unit box stays in view)."),
    samples: int = typer.Option(64, "--samples", min=1, help="Cycles samples per pixel."),
    denoise: bool = typer.Option(True, "--denoise/--no-denoise", help="Cycles' OpenImageDenoise on each view."),
    hdri: Optional[Path] = typer.Option(None, "--hdri", help="Folder of .hdr/.exr environment maps, one drawn per "
                                        "object (the paper lights with random HDRIs); default: grey sky and a sun."),
    background: str = typer.Option("255,255,255", "--background", help="R,G,B behind the object in views and video."),
    fps: float = typer.Option(7.0, "--fps", help="Frame rate of orbit.mp4 (fps_id = fps - 1 when packed)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-object draws (elevation, azimuth, HDRI)."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Blender processes at once (the CPU threads "
                                "are split between them)."),
    blender: Optional[Path] = typer.Option(None, "--blender", help="Python with bpy, or a Blender binary "
                                           "(default: $SVD_BLENDER, .venv-render, bpy here, blender on PATH)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Render again what --out holds from other settings."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    from svdcli.render.orbits import RenderSettings, render_orbits

    random_start = start_azimuth.strip().lower() == "random"
    try:
        start = None if random_start else float(start_azimuth)
    except ValueError:
        raise typer.BadParameter(f"--start-azimuth {start_azimuth!r}: a number of degrees or 'random'") from None
    settings = RenderSettings(views=views, resolution=resolution, elevation=_elevation(elevation), fov_deg=fov,
                              distance=distance, start_azimuth=start, samples=samples, denoise=denoise,
                              background=_colour(background), fps=fps, seed=seed,
                              hdri=str(hdri) if hdri else None)
    with _bar(progress) as update:
        summary = render_orbits(objects, out, settings, workers=workers, blender=blender, overwrite=overwrite,
                                progress=update)
    from rich.markup import escape

    con = console()
    rate = summary.views / summary.seconds if summary.seconds else 0.0
    con.print(f"{len(summary.rendered)} objects rendered ({summary.views} views, {rate:.2f} views/s), "
              f"{len(summary.resumed)} already done, {len(summary.failed)} failed "
              f"({summary.seconds:.1f} s). Manifest: {out}/orbits.parquet")
    for f in summary.failed:
        con.print(f"[red]{escape(str(f['id']))}[/] ({escape(str(f['mesh']))}): {escape(str(f['error']))}", markup=True)
    if summary.failed:
        fail(f"{len(summary.failed)} objects failed; fix or remove them and rerun (finished ones are kept)", code=1)


@app.command("objects", no_args_is_help=True,
             help="Write procedural textured meshes (displaced trimesh primitives, .glb) to try `svd render "
                  "orbits` and multi-view training without a 3-D dataset.")
@user_errors
def objects_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for obj_NNN_<kind>.glb."),
    count: int = typer.Option(6, "--count", min=1, help="How many objects (kinds in turn)."),
    seed: int = typer.Option(0, "--seed", help="Object n uses seed + n."),
) -> None:
    from svdcli.render.procedural import write_objects

    paths = write_objects(out, count, seed)
    console().print(f"wrote {len(paths)} meshes to {out}")


def _bar(enabled: bool):
    from contextlib import contextmanager

    @contextmanager
    def bar():
        if not enabled:
            yield None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("[bold]render"), BarColumn(), MofNCompleteColumn(), TextColumn("objects"),
                      TimeElapsedColumn(), console=console(), transient=True) as p:
            task = p.add_task("render", total=None)
            yield lambda done, total: p.update(task, completed=done, total=total)

    return bar()
