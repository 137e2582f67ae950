"""`svd eval motion` on a tiny random i2v checkpoint: every number comes from the curation motion
stage (a patched stage changes them; the stage re-run on the kept videos gives them again), the
summary statistics are the rank correlation and the cell medians of those numbers, and bad
inputs are one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from test_bad_inputs import assert_clean_error, invoke


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from svdcli.families.svd.tiny import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("motion")
    ckpt = write_tiny_checkpoint(folder / "tiny.safetensors", frames=6, width=128, height=64)
    image = folder / "cond.png"
    rng = np.random.default_rng(0)
    import cv2

    cv2.imwrite(str(image), cv2.GaussianBlur(rng.integers(0, 256, (64, 128, 3)).astype(np.uint8), (0, 0), 3))
    return ckpt, image


def run(model, tmp_path, *extra):
    ckpt, image = model
    out = tmp_path / "motion.json"
    result = invoke("eval", "motion", "--checkpoint", ckpt, "--images", image, "--motion-bucket", 0,
                    "--motion-bucket", 255, "--fps-id", 3, "--fps-id", 6, "--steps", 2, "--device", "cpu",
                    "--videos", tmp_path / "videos", "--out", out, "--no-progress", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_scores_are_the_motion_stage_scores(model, tmp_path):
    from svdcli.curate.stages import motion as stage
    from svdcli.eval.motion import measure_motion
    from svdcli.eval.stats import spearman

    result = run(model, tmp_path)
    assert result["videos"] == 4 and len(result["samples"]) == 4
    assert result["protocol"]["motion_stage"]["long_side"] == stage.MotionConfig().long_side
    for s in result["samples"]:
        video = np.load(tmp_path / "videos" / f"base_cond_fps{s['fps_id']}_mb{s['motion_bucket_id']}.npy")
        assert s["fps"] == s["fps_id"] + 1 and s["frames"] == len(video) == 6
        again = measure_motion(video, s["fps"])
        assert again["motion_score"] == s["motion_score"] and again["camera_motion"] == s["camera_motion"]
        # the stage's own pair rule and units: one pair-gap frame at these rates, scores per 1/15 s
        assert s["motion_pairs"] >= 1 and s["motion_score"] >= 0
    scores = [s["motion_score"] for s in result["samples"]]
    assert result["spearman_motion_bucket"] == spearman([s["motion_bucket_id"] for s in result["samples"]], scores)
    cell = next(c for c in result["cells"] if c["fps_id"] == 6 and c["motion_bucket_id"] == 255)
    assert cell["median_motion_score"] == next(s["motion_score"] for s in result["samples"]
                                               if s["fps_id"] == 6 and s["motion_bucket_id"] == 255)


def test_a_changed_motion_stage_changes_the_numbers(model, tmp_path, monkeypatch):
    from svdcli.curate.stages import motion as stage

    # the stage's per-pair flow magnitude, patched: 2 px per pair gap -> 2 * (1/15 s) / gap
    monkeypatch.setattr(stage, "mean_magnitude", lambda flow: 2.0)
    result = run(model, tmp_path)
    for s in result["samples"]:
        assert s["motion_score"] == pytest.approx(2.0 * stage.PAIR_GAP * s["fps"], rel=1e-9)


@pytest.mark.parametrize("case", ["no images", "bad bucket", "lora without label", "missing checkpoint"])
def test_bad_inputs(case, model, tmp_path):
    ckpt, image = model
    args, words = ["--checkpoint", ckpt, "--images", image], []
    if case == "no images":
        (tmp_path / "empty").mkdir()
        args, words = ["--checkpoint", ckpt, "--images", tmp_path / "empty"], ["empty", "holds no images"]
    elif case == "bad bucket":
        args += ["--motion-bucket", 300]
        words = ["--motion-bucket 300", "0..255"]
    elif case == "lora without label":
        from safetensors.torch import save_file
        import torch

        save_file({"x.lora_A": torch.zeros(1, 1)}, str(tmp_path / "pan.safetensors"))
        args += ["--lora", tmp_path / "pan.safetensors"]
        words = ["pan.safetensors", "--lora-label"]
    else:
        args = ["--checkpoint", tmp_path / "none.safetensors", "--images", image]
        words = ["none.safetensors", "not found"]
    assert_clean_error(invoke("eval", "motion", *args, "--steps", 1, "--no-progress"), *words)
