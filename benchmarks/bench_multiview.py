"""SVD-MV on the CPU: orbit rendering throughput, the multiview training step, whole commands.

  - rendering (Blender Cycles on the CPU, 8 views of 2 procedural objects per run): views/s of
    `render_orbits` (one Blender process renders all its objects: scene reset per object,
    Cycles' kernels loaded once) against the baseline of one Blender process per object (the
    Objaverse scripts' `blender -b -P` per object loop), at 64 and 128 px, 16 samples;
  - training step (prepare + EDM loss + backward + AdamW) of the tiny model on the same
    2 x 8-frame 64x64 batch: stage multiview (elevation in the vector) against the image-to-video
    finetune it starts from;
  - whole commands with start-up: `svd render orbits`, `svd eval multiview` (random weights).
Timings are medians of REPEATS (rendering: of 2), one thread for torch; the machine is shared,
so read the ratios, measured interleaved in one run. Run: python -m benchmarks.bench_multiview
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.timing import median_seconds

REPEATS = 3


def _median_time(fn, repeats: int = REPEATS, warmup: bool = True) -> float:
    return median_seconds(fn, repeats, warmup)


def render_throughput(work: Path) -> None:
    from svdcli.render.orbits import RenderSettings, render_orbits
    from svdcli.render.procedural import write_objects

    objects = work / "objects"
    paths = write_objects(objects, 2, seed=0, kinds=("box", "torus"))
    for size in (64, 128):
        settings = RenderSettings(views=8, resolution=size, samples=16, denoise=False)
        ours, base = [], []
        for trial in range(2):  # interleaved: ours, then one process per object
            out = work / f"ours_{size}_{trial}"
            t0 = time.perf_counter()
            render_orbits(objects, out, settings)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for p in paths:
                single = work / f"single_{size}_{trial}_{p.stem}"
                single.mkdir()
                shutil.copy(p, single / p.name)
                render_orbits(single, work / f"base_{size}_{trial}_{p.stem}", settings)
            base.append(time.perf_counter() - t0)
        views = 8 * len(paths)
        o, b = statistics.median(ours), statistics.median(base)
        print(f"render {size}px x{views} views: one process {views / o:.2f} views/s, a process per object "
              f"{views / b:.2f} views/s (x{b / o:.2f})")


def train_step_times() -> None:
    from svdcli.families import family_for
    from svdcli.train.config import config_from_dict

    torch.set_num_threads(1)
    family = family_for("svd")
    video = torch.rand(2, 8, 3, 64, 64) * 2 - 1
    meta = {"fps_id": torch.tensor([6, 6]), "motion_bucket_id": torch.tensor([127, 127]),
            "elevation_deg": torch.tensor([10.0, 20.0]), "caption": ["", ""]}
    steps = {}
    for stage in ("finetune", "multiview"):
        cfg = config_from_dict({"stage": stage, "model": "tiny", "precision": "fp32",
                                "data": {"frames": 8, "height": 64, "width": 64, "batch_size": 2}})
        encoders = family.encoders(cfg, "cpu")
        denoiser = family.build(cfg)
        opt = torch.optim.AdamW([p for p in denoiser.parameters() if p.requires_grad], lr=1e-4)
        gen = torch.Generator().manual_seed(0)

        def step():
            batch = family.prepare(video, meta, encoders, cfg, gen, "cpu")
            sigma = family.training_sigmas(2, cfg, gen)
            loss = family.loss(denoiser, batch, sigma, torch.randn(batch.x0.shape, generator=gen)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[stage] = step
    times = {s: [] for s in steps}
    for s in steps:
        steps[s]()  # warm-up
    for _ in range(REPEATS):  # interleaved
        for s, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            times[s].append(time.perf_counter() - t0)
    f, m = statistics.median(times["finetune"]), statistics.median(times["multiview"])
    print(f"train step, tiny, 2 x 8 frames 64x64: finetune {f * 1000:.0f} ms, multiview {m * 1000:.0f} ms "
          f"(x{m / f:.3f})")


def whole_commands(work: Path) -> None:
    svd = [sys.executable, "-m", "svdcli"]
    objects = work / "objects"
    t0 = time.perf_counter()
    subprocess.run(svd + ["render", "orbits", "--objects", str(objects), "--out", str(work / "cmd"), "--views", "8",
                          "--resolution", "64", "--samples", "16", "--no-denoise", "--no-progress"],
                   check=True, capture_output=True)
    render = time.perf_counter() - t0
    truth = work / "cmd" / "obj_000_box"
    t0 = time.perf_counter()
    subprocess.run(svd + ["eval", "multiview", "--views", str(truth), "--truth", str(truth), "--lpips-backbone",
                          "random", "--clip-model", "RN50", "--clip-weights", "random"],
                   check=True, capture_output=True)
    evaluate = time.perf_counter() - t0
    print(f"whole commands: svd render orbits (2 objects x 8 views, 64 px) {render:.1f} s; "
          f"svd eval multiview (7 view pairs, random weights) {evaluate:.1f} s")


def main() -> None:
    from svdcli.errors import SvdError
    from svdcli.render.blender import find_blender

    with tempfile.TemporaryDirectory(prefix="bench-mv-") as tmp:
        work = Path(tmp)
        try:
            find_blender()
        except SvdError as exc:
            print(f"rendering skipped: {exc}")
        else:
            render_throughput(work)
            whole_commands(work)
        train_step_times()


if __name__ == "__main__":
    main()
