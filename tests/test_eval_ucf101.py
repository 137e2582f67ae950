"""`svd eval ucf101` on a tiny UCF-101 stand-in (two classes, UCF file names) and a tiny random i2v
model: the class plan follows the split's proportions, prompts come from class names, and the
result records the protocol; the helpers on their own."""
from __future__ import annotations

import json

import numpy as np
import pytest

from eval_helpers import moving_videos, tiny_i3d_file
from test_bad_inputs import assert_clean_error, invoke


def test_class_plan_prompts_and_names():
    from svdcli.eval.ucf101 import class_counts, class_of, class_words

    assert class_of("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi") == "ApplyEyeMakeup"
    assert class_words("ApplyEyeMakeup") == "apply eye makeup" and class_words("YoYo") == "yo yo"
    counts = class_counts(["A"] * 6 + ["B"] * 3 + ["C"], 7, "train")
    assert counts == {"A": 4, "B": 2, "C": 1} and sum(counts.values()) == 7
    assert class_counts(["A"] * 6 + ["B"], 4, "uniform") == {"A": 2, "B": 2}


@pytest.fixture(scope="module")
def ucf(tmp_path_factory):
    from svdcli.families.svd.tiny import write_tiny_checkpoint
    from svdcli.video.write import write_frames

    folder = tmp_path_factory.mktemp("ucf")
    data = folder / "UCF-101"
    names = [("ApplyEyeMakeup", 3), ("Biking", 1)]
    k = 0
    for name, n in names:
        for g in range(n):
            video = moving_videos(1, frames=12, size=64, seed=k)[0]
            write_frames(data / name / f"v_{name}_g{g + 1:02d}_c01.mp4", video, fps=25)
            k += 1
    ckpt = write_tiny_checkpoint(folder / "tiny.safetensors", frames=9, width=64, height=64)
    return data, ckpt, tiny_i3d_file(folder)


def test_zero_shot_protocol_end_to_end(ucf, tmp_path):
    data, ckpt, i3d = ucf
    out = tmp_path / "ucf.json"
    result = invoke("eval", "ucf101", "--checkpoint", ckpt, "--data", data, "--i3d", i3d, "--samples", 4,
                    "--real-samples", 4, "--frames", 9, "--condition", "first-frame", "--steps", 1,
                    "--device", "cpu", "--videos", tmp_path / "gen", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    data_out = json.loads(out.read_text())
    assert data_out["metric"] == "fvd_ucf101_zero_shot" and np.isfinite(data_out["value"])
    assert data_out["fake"]["per_class"] == {"ApplyEyeMakeup": 3, "Biking": 1}
    assert data_out["class_prompts"]["ApplyEyeMakeup"] == "apply eye makeup"
    assert data_out["real"]["measured"] == 4 and data_out["real"]["sampling"] == "center"
    assert data_out["protocol"]["fvd"]["frames"] == 9 and data_out["protocol"]["condition"] == "first-frame"
    assert len(list((tmp_path / "gen").glob("*_Biking.npy"))) == 1
    assert any("10000" in w for w in data_out["warnings"])


def test_bad_inputs(ucf, tmp_path):
    data, ckpt, i3d = ucf
    base = ["eval", "ucf101", "--checkpoint", ckpt, "--data", data, "--i3d", i3d, "--frames", 9, "--no-progress"]
    assert_clean_error(invoke(*base, "--real-samples", 50), "4 videos, fewer than --real-samples 50")
    (tmp_path / "p.json").write_text(json.dumps({"Biking": "a person riding a bike"}))
    assert_clean_error(invoke(*base, "--real-samples", 4, "--prompts", tmp_path / "p.json"),
                       "no prompt for class ApplyEyeMakeup")
    (tmp_path / "v_bad.mp4").write_bytes(b"")
    assert_clean_error(invoke(*base[:4], "--data", tmp_path, "--i3d", i3d, "--no-progress"),
                       "v_bad.mp4", "not a UCF-101 file name")
