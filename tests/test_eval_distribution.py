"""`svd eval distribution` and its statistics: Spearman, Wasserstein-1 and KS equal scipy's; the
generated videos' scores are the curation scorers' and the report compares them with the
manifest's kept clips."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from eval_helpers import moving_videos, write_npy_folder
from numeric import assert_close_ulps
from test_bad_inputs import assert_clean_error, invoke


def test_statistics_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    from svdcli.eval.stats import ks_statistic, spearman, wasserstein1

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(0.5, 2.0, size=23)
    ties = np.array([1, 2, 2, 3, 3, 3, 4, 5.0])
    noisy = ties + rng.normal(0, 0.7, ties.shape)
    assert_close_ulps(spearman(ties, noisy), stats.spearmanr(ties, noisy).statistic, scale=1.0)
    assert_close_ulps(wasserstein1(a, b), stats.wasserstein_distance(a, b), scale=4.0, ulps=256)
    assert_close_ulps(ks_statistic(a, b), stats.ks_2samp(a, b).statistic, scale=1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None and spearman([1, 2], [1, 2]) is None


def write_training_manifest(path, scores: list[tuple[float, str, float]]):
    from svdcli.manifest.io import write_manifest

    rows = [{"clip_id": f"c{i}", "video_id": "v", "video_path": "/nowhere.mp4", "start_time": float(i),
             "end_time": i + 1.0, "fps": 8.0, "width": 64, "height": 64, "status": "ok", "keep": i != 0,
             "motion_score": m, "camera_motion": cam, "text_area": t} for i, (m, cam, t) in enumerate(scores)]
    return write_manifest(pa.Table.from_pylist(rows), path, record={"stage": "test", "settings": {}})


def test_generated_scores_come_from_the_curation_scorers(tmp_path):
    from svdcli.eval.motion import measure_motion
    from svdcli.eval.stats import wasserstein1

    videos = moving_videos(3, frames=12, size=64, seed=3, speed=2.0)
    fake = write_npy_folder(tmp_path / "fake", videos)
    train = [(99.0, "complex", 0.9)] + [(0.1 * i, "static" if i % 2 else "pan_left", 0.0) for i in range(1, 9)]
    manifest = write_training_manifest(tmp_path / "train.parquet", train)
    result = invoke("eval", "distribution", "--fake", fake, "--manifest", manifest, "--out", tmp_path / "report",
                    "--fps", 8, "--text", "dbnet", "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "report" / "result.json").read_text())
    expected = [measure_motion(v, 8.0) for v in videos]
    motion = data["scores"]["motion_score"]
    kept = [m for m, _, _ in train[1:]]                      # the dropped clip (keep = False) is left out
    assert motion["training_clips"] == 8 and motion["median_training"] == pytest.approx(np.median(kept))
    assert motion["median_generated"] == pytest.approx(np.median([e["motion_score"] for e in expected]))
    assert motion["wasserstein1"] == pytest.approx(wasserstein1([e["motion_score"] for e in expected], kept))
    shares = data["scores"]["camera_motion"]["generated"]
    for label in {e["camera_motion"] for e in expected}:
        assert shares[label] == pytest.approx(np.mean([e["camera_motion"] == label for e in expected]))
    assert data["scores"]["text_area"]["generated_videos"] == 3 and data["scorers"]["text"] == "dbnet"
    page = (tmp_path / "report" / "index.html").read_text()
    assert "plots/motion_score.png" in page and (tmp_path / "report" / "plots" / "camera_motion.png").is_file()


def test_arrays_without_a_frame_rate_need_fps(tmp_path):
    fake = write_npy_folder(tmp_path / "fake", moving_videos(1, frames=8, size=32))
    manifest = write_training_manifest(tmp_path / "train.parquet", [(0.1, "static", 0.0)] * 3)
    result = invoke("eval", "distribution", "--fake", fake, "--manifest", manifest, "--out", tmp_path / "r",
                    "--text", "none", "--no-progress")
    assert_clean_error(result, "v0000.npy", "no frame rate", "--fps")
