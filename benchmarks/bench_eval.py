"""`svd eval`: I3D feature throughput, the Fréchet distance at the protocol's size, and whole commands.

1. I3D features per second at batch 1 and 16 (16 frames, 224x224, the real width, random weights):
   ours against VideoGPT's port as cd-fvd ships it (`cdfvd.third_party.i3d.pytorch_i3d`) on the
   same weights and inputs, interleaved, median of the repeats. GPU rows when CUDA is visible.
2. The Fréchet distance of 2048 + 2048 400-d features (the FVD protocol's size): ours (float64,
   symmetric eigendecompositions) against cd-fvd's `cdfvd.compute_fvd_from_stats` (scipy sqrtm) on
   the same features: time and agreement.
3. FVD end to end on 2048 + 2048 tiny videos (16 frames, 32x32 .npy): everything but the network
   (listing, reading, resizing to 224, statistics, distance) measured at full size with a
   stand-in network, and the network's own cost per clip from (1); the sum is the projection for a
   whole run. A whole `svd eval fvd` command (start-up included) on 32 + 32 tiny videos with the
   tiny test I3D is timed too, and `svd eval --help`.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import median_seconds

REPO = Path(__file__).resolve().parents[1]
REPEATS = 3


def _timed(fn, repeats: int = REPEATS) -> float:
    return median_seconds(fn, repeats)


def i3d_throughput(device: str) -> None:
    from cdfvd.third_party.i3d.pytorch_i3d import InceptionI3d

    from svdcli.eval.i3d import I3D, I3DConfig, load_state, rename_videogpt

    sys.path.insert(0, str(REPO / "tests"))
    from eval_helpers import random_state

    ref = InceptionI3d(400, in_channels=3).eval()
    state = random_state(ref, seed=0)
    ref.load_state_dict(state)
    ours = load_state(I3D(I3DConfig(bn_eps=1e-5)), rename_videogpt(state), "bench")
    ref, ours = ref.to(device), ours.to(device)
    for batch in (1, 16):
        x = torch.rand(batch, 3, 16, 224, 224, device=device) * 2 - 1
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def run(net):
            with torch.inference_mode():
                net(x)
            sync()

        run(ours), run(ref)                                   # warm-up
        reps = REPEATS if (device == "cuda" or batch == 1) else 1
        pairs = [(_timed(lambda: run(ours), 1), _timed(lambda: run(ref), 1)) for _ in range(reps)]
        t_ours, t_ref = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        print(f"I3D {device} batch {batch:2d}: ours {batch / t_ours:7.2f} clips/s, cd-fvd (VideoGPT port) "
              f"{batch / t_ref:7.2f} clips/s, ratio {t_ref / t_ours:.2f}x ({reps} interleaved repeats)")


def frechet_at_protocol_size() -> None:
    import cdfvd.fvd as cd
    from cdfvd.utils.metric_utils import FeatureStats as CdStats

    from svdcli.eval.frechet import FeatureStats, frechet_from_stats

    rng = np.random.default_rng(0)
    real = rng.normal(size=(2048, 400)) @ rng.normal(size=(400, 400)) * 0.1
    fake = real[rng.permutation(2048)] * 1.1 + 0.05 * rng.normal(size=(2048, 400))
    ours_a, ours_b = FeatureStats(), FeatureStats()
    cd_a, cd_b = CdStats(capture_mean_cov=True), CdStats(capture_mean_cov=True)
    t_stats = _timed(lambda: (ours_a.__init__(), ours_b.__init__(), ours_a.add(real), ours_b.add(fake)))
    t_cd_stats = _timed(lambda: (cd_a.__init__(capture_mean_cov=True), cd_b.__init__(capture_mean_cov=True),
                                 cd_a.append(real), cd_b.append(fake)))
    ours_value, cd_value = [], []
    t_ours = _timed(lambda: ours_value.append(frechet_from_stats(ours_a, ours_b)))
    scorer = object.__new__(cd.cdfvd)   # only its distance: no model is loaded
    t_cd = _timed(lambda: cd_value.append(float(scorer.compute_fvd_from_stats(cd_b, cd_a))))
    rel = abs(ours_value[-1] - cd_value[-1]) / abs(cd_value[-1])
    print(f"Frechet 2048+2048 x 400-d: ours {t_ours * 1e3:.0f} ms, cd-fvd (scipy sqrtm) {t_cd * 1e3:.0f} ms, "
          f"ratio {t_cd / t_ours:.2f}x; statistics ours {t_stats * 1e3:.0f} ms, cd-fvd {t_cd_stats * 1e3:.0f} ms; "
          f"FVD ours {ours_value[-1]:.6f} cd-fvd {cd_value[-1]:.6f} (relative difference {rel:.1e})")


def end_to_end_without_network(folder: Path) -> float:
    from svdcli.eval.features import measure
    from svdcli.eval.frechet import frechet_from_stats
    from svdcli.eval.protocol import to_network_input

    sys.path.insert(0, str(REPO / "tests"))
    from eval_helpers import moving_videos

    for side, seed in (("real", 0), ("fake", 1)):
        (folder / side).mkdir(exist_ok=True)
        for start in range(0, 2048, 256):
            for i, video in enumerate(moving_videos(256, frames=16, size=32, seed=seed * 100 + start)):
                np.save(folder / side / f"c{start + i:05d}.npy", video)

    def stand_in(clips):
        x = to_network_input(torch.from_numpy(np.stack(clips)), 224, "stretch", (-1.0, 1.0))   # the real resize
        return x.mean(dim=(3, 4)).flatten(1)[:, :400].contiguous()                           # (B, 3*16) features

    t0 = time.perf_counter()
    a = measure(folder / "real", 2048, 16, 1, "random", 0, stand_in, 16, workers=2)
    b = measure(folder / "fake", 2048, 16, 1, "start", 1, stand_in, 16, workers=2)
    frechet_from_stats(a.stats, b.stats)
    took = time.perf_counter() - t0
    print(f"FVD 2048+2048 tiny videos without the network (read, resize to 224, statistics, distance): "
          f"{took:.1f} s = {4096 / took:.0f} clips/s")
    return took


def whole_commands(folder: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from eval_helpers import moving_videos, tiny_i3d_file, write_npy_folder

    i3d = tiny_i3d_file(folder)
    for side, seed in (("real32", 0), ("fake32", 1)):
        if not (folder / side).exists():
            write_npy_folder(folder / side, moving_videos(32, frames=16, size=32, seed=seed))
    cmd = [sys.executable, "-m", "svdcli", "eval", "fvd", "--real", str(folder / "real32"), "--fake",
           str(folder / "fake32"), "--i3d", str(i3d), "--samples", "32", "--no-progress", "--device", "cpu"]
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2", "PATH": "/usr/bin:/bin"}
    t_run = _timed(lambda: subprocess.run(cmd, check=True, capture_output=True, env=env), 1)
    t_help = _timed(lambda: subprocess.run([sys.executable, "-m", "svdcli", "eval", "--help"], check=True,
                                           capture_output=True, env=env))
    print(f"whole `svd eval fvd` on 32+32 tiny videos, tiny-width I3D (1/8), CPU: {t_run:.1f} s "
          f"({64 / t_run:.1f} clips/s, start-up included); `svd eval --help`: {t_help:.2f} s")


def main() -> None:
    torch.set_num_threads(2)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        i3d_throughput(device)
    frechet_at_protocol_size()
    with tempfile.TemporaryDirectory() as tmp:
        end_to_end_without_network(Path(tmp))
        whole_commands(Path(tmp))


if __name__ == "__main__":
    main()
