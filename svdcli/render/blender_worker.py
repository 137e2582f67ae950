"""Runs INSIDE Blender's Python (a `bpy` interpreter or `blender -b -P`): renders the views of a
job file and reports each object on stdout. Imports only bpy, mathutils and the standard library
(it never imports svdcli: Blender's Python has its own numpy and none of our dependencies).

    python blender_worker.py JOB.json            # an interpreter with the bpy wheel
    blender -b --factory-startup -P blender_worker.py -- JOB.json

JOB.json: {"settings": {...}, "objects": [{"id", "mesh", "out", "poses": [4x4 c2w, ...]}, ...]}
(see svdcli/render/blender.py, which writes it). For each object the scene is reset, the mesh
imported and normalised (bounding box centred at the origin, longest side 1), lit, and rendered
once per pose with Cycles on the CPU to `out/NNN.png` (RGBA, straight alpha). One line per object
goes to stdout: `SVDRENDER {"id", "ok", "error", "cameras": [...], "normalisation": {...}}`, with
the camera matrices and intrinsics read back from Blender after each render, so what is
recorded is what rendered.
"""
import json
import math
import os
import sys
import time
import traceback

import bpy
from mathutils import Matrix, Vector

MARK = "SVDRENDER "
IMPORTERS = {
    ".glb": lambda p: bpy.ops.import_scene.gltf(filepath=p),
    ".gltf": lambda p: bpy.ops.import_scene.gltf(filepath=p),
    ".obj": lambda p: bpy.ops.wm.obj_import(filepath=p),
    ".ply": lambda p: bpy.ops.wm.ply_import(filepath=p),
    ".stl": lambda p: bpy.ops.wm.stl_import(filepath=p),
    ".fbx": lambda p: bpy.ops.import_scene.fbx(filepath=p),
}


def reset_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)


def import_mesh(path):
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in IMPORTERS:
        raise ValueError(f"no importer for {suffix} files")
    IMPORTERS[suffix](path)
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    if not meshes or not any(len(o.data.vertices) for o in meshes):
        raise ValueError("the file holds no mesh")
    return meshes


def bounds(meshes):
    lo = Vector((math.inf,) * 3)
    hi = Vector((-math.inf,) * 3)
    for ob in meshes:
        for corner in ob.bound_box:
            p = ob.matrix_world @ Vector(corner)
            lo = Vector(map(min, lo, p))
            hi = Vector(map(max, hi, p))
    return lo, hi


def normalise(meshes):
    """Centre the bounding box at the origin and scale its longest side to 1 (through a parent)."""
    bpy.context.view_layer.update()
    lo, hi = bounds(meshes)
    extent = max(hi - lo)
    if extent <= 0:
        raise ValueError("the mesh has no extent")
    scale = 1.0 / extent
    centre = (lo + hi) / 2
    root = bpy.data.objects.new("normalise", None)
    bpy.context.scene.collection.objects.link(root)
    for ob in bpy.context.scene.objects:
        if ob.parent is None and ob is not root:
            ob.parent = root
    root.matrix_world = Matrix.Scale(scale, 4) @ Matrix.Translation(-centre)
    bpy.context.view_layer.update()
    return {"scale": scale, "centre": list(centre), "note": "p_normalised = scale * (p_file - centre), "
            "in Blender's Z-up axes after import"}


def colour_materials(meshes):
    """A mesh without a material but with a colour attribute (scans, PLY/OBJ vertex colours) gets
    one reading that attribute, so it does not render plain grey."""
    for ob in meshes:
        me = ob.data
        if any(slot.material for slot in ob.material_slots) or not me.color_attributes:
            continue
        mat = bpy.data.materials.new("vertex_colour")
        mat.use_nodes = True
        nodes = mat.node_tree.nodes
        attr = nodes.new("ShaderNodeAttribute")
        attr.attribute_name = me.color_attributes[0].name
        mat.node_tree.links.new(attr.outputs["Color"], nodes["Principled BSDF"].inputs["Base Color"])
        me.materials.append(mat)


def light(settings, hdri):
    scene = bpy.context.scene
    world = bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    nodes = world.node_tree.nodes
    background = nodes["Background"]
    if hdri:
        env = nodes.new("ShaderNodeTexEnvironment")
        env.image = bpy.data.images.load(hdri)
        world.node_tree.links.new(env.outputs["Color"], background.inputs["Color"])
        background.inputs["Strength"].default_value = settings.get("hdri_strength", 1.0)
        return
    grey = settings["ambient"]
    background.inputs["Color"].default_value = (grey, grey, grey, 1.0)
    background.inputs["Strength"].default_value = 1.0
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", type="SUN"))
    sun.data.energy = settings["sun_strength"]
    sun.rotation_euler = (math.radians(40.0), 0.0, math.radians(30.0))  # fixed in the world: views agree
    scene.collection.objects.link(sun)


def setup_render(settings):
    scene = bpy.context.scene
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = settings["samples"]
    scene.cycles.use_denoising = settings["denoise"]
    scene.cycles.seed = 0
    r.resolution_x = r.resolution_y = settings["resolution"]
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True
    r.image_settings.file_format = "PNG"
    r.image_settings.color_mode = "RGBA"
    r.image_settings.color_depth = "8"
    r.threads_mode = "FIXED"
    r.threads = settings["threads"]
    scene.view_settings.view_transform = "Standard"   # no filmic / AgX tone curve: colours as authored
    scene.view_settings.look = "None"
    cam = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.sensor_width = 32.0
    cam.data.lens = 16.0 / math.tan(math.radians(settings["fov_deg"]) / 2.0)
    cam.data.clip_start, cam.data.clip_end = 0.01, 100.0
    return cam


def recorded_camera(cam, resolution):
    """The camera as Blender holds it: matrix_world, and K from its lens and sensor."""
    f = cam.data.lens / cam.data.sensor_width * resolution
    cx = resolution * (0.5 - cam.data.shift_x)
    cy = resolution * (0.5 + cam.data.shift_y)
    return {"c2w": [list(row) for row in cam.matrix_world],
            "K": [[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]}


def render_object(job, settings):
    reset_scene()
    meshes = import_mesh(job["mesh"])
    colour_materials(meshes)
    norm = normalise(meshes)
    light(settings, job.get("hdri"))
    cam = setup_render(settings)
    os.makedirs(job["out"], exist_ok=True)
    cameras = []
    for k, c2w in enumerate(job["poses"]):
        cam.matrix_world = Matrix(c2w)
        bpy.context.view_layer.update()
        bpy.context.scene.render.filepath = os.path.join(job["out"], f"{k:03d}.png")
        bpy.ops.render.render(write_still=True)
        cameras.append(recorded_camera(cam, settings["resolution"]))
    return {"cameras": cameras, "normalisation": norm}


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    settings = job["settings"]
    for obj in job["objects"]:
        start = time.perf_counter()
        try:
            report = {"id": obj["id"], "ok": True, **render_object(obj, settings)}
        except Exception as exc:  # one broken file must not stop the others
            report = {"id": obj["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                      "trace": traceback.format_exc()[-2000:]}
        report["seconds"] = time.perf_counter() - start
        sys.stdout.write(MARK + json.dumps(report) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    main(args[-1])
