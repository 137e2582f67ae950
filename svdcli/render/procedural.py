"""Procedural textured meshes for tests and the demo: trimesh primitives, displaced and coloured.

Public 3-D collections (Objaverse, Google Scanned Objects) cannot be downloaded on every
machine, so tests and `make demo` render these instead; `svd render orbits` loads them through
the same importers as any .glb / .obj / .ply. Every object is a function of (kind, seed):

    write_objects("objects/", count=6, seed=0)   # objects/obj_000_torus.glb, ...

Each mesh gets a smooth random displacement along its normals (sums of low-frequency sines,
so silhouettes are not those of the bare primitive) and a UV texture drawn from random colours
(stripes, checks or a gradient, mapped by a spherical projection), exported as glTF binary with
the texture embedded. glTF is Y-up: Blender's importer turns file (x, y, z) into (x, -z, y).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

KINDS = ("sphere", "box", "cylinder", "cone", "torus", "capsule")


def primitive(kind: str):
    import trimesh

    makers = {
        "sphere": lambda: trimesh.creation.icosphere(subdivisions=3, radius=0.5),
        "box": lambda: trimesh.creation.box(extents=(1.0, 0.7, 0.5)).subdivide().subdivide().subdivide(),
        "cylinder": lambda: trimesh.creation.cylinder(radius=0.35, height=1.0, sections=48).subdivide(),
        "cone": lambda: trimesh.creation.cone(radius=0.45, height=0.9, sections=48).subdivide(),
        "torus": lambda: trimesh.creation.torus(major_radius=0.4, minor_radius=0.15, major_sections=48,
                                                minor_sections=24),
        "capsule": lambda: trimesh.creation.capsule(height=0.6, radius=0.25, count=[32, 32]),
    }
    if kind not in makers:
        raise ValueError(f"unknown primitive {kind!r}; choose one of {', '.join(KINDS)}")
    return makers[kind]()


def displace(mesh, rng: np.random.Generator, amount: float = 0.06):
    """Move every vertex along its normal by a smooth random field (three random sine waves)."""
    v = mesh.vertices
    field = np.zeros(len(v))
    for _ in range(3):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        field += np.sin(v @ direction * rng.uniform(3.0, 8.0) + rng.uniform(0, 2 * np.pi))
    mesh.vertices = v + mesh.vertex_normals * (amount / 3.0) * field[:, None]
    return mesh


def texture_image(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8: stripes, checks or a two-colour gradient in random colours."""
    colours = rng.integers(30, 230, size=(3, 3)).astype(np.float64)
    y, x = np.mgrid[0:size, 0:size] / size
    pattern = rng.integers(0, 3)
    if pattern == 0:
        k = rng.integers(3, 9)
        index = (np.floor(x * k) % 3).astype(int)
    elif pattern == 1:
        k = rng.integers(2, 7)
        index = ((np.floor(x * 2 * k) + np.floor(y * k)) % 2).astype(int)
    else:
        t = (np.sin(2 * np.pi * (x + y * rng.uniform(0.5, 2))) + 1) / 2
        return (colours[0] * t[..., None] + colours[1] * (1 - t[..., None])).astype(np.uint8)
    return colours[index].astype(np.uint8)


def spherical_uv(vertices: np.ndarray) -> np.ndarray:
    centred = vertices - vertices.mean(axis=0)
    u = np.arctan2(centred[:, 1], centred[:, 0]) / (2 * np.pi) + 0.5
    z = centred[:, 2]
    v = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
    return np.stack([u, v], axis=1)


def make_object(kind: str, seed: int):
    """A displaced, textured trimesh of `kind`, a function of (kind, seed)."""
    import trimesh
    from PIL import Image

    rng = np.random.default_rng(seed)
    mesh = displace(primitive(kind), rng)
    image = Image.fromarray(texture_image(rng))
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=image, metallicFactor=0.0,
                                                   roughnessFactor=0.8)
    mesh.visual = trimesh.visual.TextureVisuals(uv=spherical_uv(mesh.vertices), material=material)
    return mesh


def write_objects(folder: str | Path, count: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> list[Path]:
    """`count` objects as obj_NNN_<kind>.glb in `folder` (kinds in turn, seeds seed + n)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        kind = kinds[n % len(kinds)]
        path = folder / f"obj_{n:03d}_{kind}.glb"
        make_object(kind, seed + n).export(str(path))
        paths.append(path)
    return paths
