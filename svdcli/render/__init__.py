"""Rendering 3-D objects for multi-view training and evaluation (SVD-MV, SVD paper sec. 4.5).

    cameras.py          orbit poses, intrinsics, projection (numpy; the conventions are there)
    blender.py          finding Blender and running its worker processes
    blender_worker.py   the script Blender's own Python runs: import, normalise, light, render
    orbits.py           `svd render orbits`: meshes -> views, masks, orbit.mp4, poses.json
    manifest.py         orbits.parquet, the manifest `svd pack` reads (poses in `orbit_camera`)
    procedural.py       displaced, textured trimesh primitives for tests and the demo
Nothing here is imported before a command needs it.
"""
