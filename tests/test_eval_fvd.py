"""`svd eval fvd` end to end on tiny videos and a tiny random I3D: FVD(x, x) ~ 0, growing with noise
and with temporal shuffling, a result JSON that records its protocol, and bad inputs refused in
one line (exit 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from eval_helpers import moving_videos, tiny_i3d_file, write_npy_folder
from test_bad_inputs import assert_clean_error, invoke

FRAMES = 9   # the fewest frames I3D's temporal strides take: fast tests, same code


@pytest.fixture(scope="module")
def i3d(tmp_path_factory):
    return tiny_i3d_file(tmp_path_factory.mktemp("i3d"))


@pytest.fixture(scope="module")
def videos():
    return moving_videos(4, frames=FRAMES, size=32, seed=1, speed=1.5)


def fvd(real, fake, i3d, tmp_path, *extra):
    out = tmp_path / "fvd.json"
    result = invoke("eval", "fvd", "--real", real, "--fake", fake, "--i3d", i3d, "--frames", FRAMES,
                    "--samples", 0, "--out", out, "--no-progress", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_fvd_behaves_and_records_its_protocol(i3d, videos, tmp_path):
    from svdcli.eval.features import i3d_embedder
    from svdcli.eval.frechet import FeatureStats, frechet_from_stats
    from svdcli.eval.networks import file_sha256, load_network
    from svdcli.eval.protocol import fvd_protocol

    real = write_npy_folder(tmp_path / "real", videos)
    same = fvd(real, real, i3d, tmp_path, "--real-sampling", "start")
    assert same["value"] <= 1e-6 * max(1.0, same["fake"]["measured"])
    assert same["metric"] == "fvd" and same["network"]["sha256"] == file_sha256(i3d)
    assert same["network"]["name"] == "i3d-styleganv" and len(same["network"]["source_sha256"]) == 64
    assert same["protocol"]["frames"] == FRAMES and same["protocol"]["resize"] == "stretch"
    assert same["real"]["measured"] == 4 and same["svdcli_version"]
    assert any("fewer samples than the protocol's 2048" in w for w in same["warnings"])

    # the library path on the same features: FVD grows with noise and with temporal shuffling
    net, _ = load_network(i3d, "i3d")
    embed = i3d_embedder(net, fvd_protocol("styleganv", frames=FRAMES), torch.device("cpu"))

    def stats(clips):
        s = FeatureStats()
        s.add(embed(list(clips)).double().numpy())
        return s

    base = stats(videos)
    rng = np.random.default_rng(0)
    noisy = [frechet_from_stats(base, stats(np.clip(videos + rng.normal(0, sigma, videos.shape), 0, 255).astype(np.uint8)))
             for sigma in (8, 32, 96)]
    assert noisy[0] < noisy[1] < noisy[2], noisy
    swap_some = videos.copy()
    swap_some[:, [1, 2, 5, 6]] = videos[:, [2, 1, 6, 5]]
    shuffled = [frechet_from_stats(base, stats(v)) for v in (swap_some, videos[:, rng.permutation(FRAMES)])]
    assert 0 < shuffled[0] < shuffled[1], shuffled


@pytest.mark.parametrize("case", ["empty folder", "missing folder", "too few videos", "all too short",
                                  "unreadable video", "missing weights", "bad protocol"])
def test_bad_inputs_are_one_line_errors(case, i3d, videos, tmp_path):
    real = write_npy_folder(tmp_path / "real", videos)
    fake, args, words = real, [], []
    if case == "empty folder":
        fake = tmp_path / "empty"
        fake.mkdir()
        words = ["empty", "holds no videos"]
    elif case == "missing folder":
        fake, words = tmp_path / "nowhere", ["nowhere", "no such folder"]
    elif case == "too few videos":
        args, words = ["--samples", 10], ["real", "holds 4 videos, fewer than --samples 10"]
    elif case == "all too short":
        fake = write_npy_folder(tmp_path / "short", videos[:, :4])
        words = ["short", "only 0 of the 4 clips", "4 too short"]
        args = ["--samples", 4]
    elif case == "unreadable video":
        fake = write_npy_folder(tmp_path / "broken", videos)
        (fake / "v0003.mp4").write_bytes(b"not a video at all")
        real, args, words = fake, ["--samples", 5], ["v0003.mp4", "cannot be read as a video", "--skip-bad"]
    elif case == "missing weights":
        i3d = tmp_path / "none.safetensors"
        words = ["none.safetensors", "i3d_torchscript.pt", "svd eval convert", "sha256"]
    else:
        args, words = ["--protocol", "tfhub"], ["unknown --protocol 'tfhub'"]
    args = args or ["--samples", 4]
    result = invoke("eval", "fvd", "--real", real, "--fake", fake, "--i3d", i3d, "--frames", FRAMES,
                    "--no-progress", *args)
    assert_clean_error(result, *words)


def test_skip_bad_counts_unreadable_videos(i3d, videos, tmp_path):
    real = write_npy_folder(tmp_path / "real", videos)
    fake = write_npy_folder(tmp_path / "fake", videos[:3])
    (fake / "v0009.mp4").write_bytes(b"garbage")
    result = fvd(real, fake, i3d, tmp_path, "--skip-bad")
    assert result["fake"]["measured"] == 3 and result["fake"]["skipped"] == {"unreadable": 1}
