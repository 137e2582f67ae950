"""Cuts and motion from one decode: the same manifests as the two stages run one after the other."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from svdcli.curate.stages import cuts_motion
from svdcli.curate.stages.cuts import cuts_config, run_cuts
from svdcli.curate.stages.cuts_motion import run_cuts_motion, write_motion_manifest
from svdcli.curate.stages.motion import MotionConfig, run_motion
from svdcli.manifest.io import read_manifest
from svdcli.video.decode import decode_once
from svdcli.video.gray import GrayFrameStore
from svdcli.video.sparse import read_gray_at
from svdcli.video.synth import Shot, write_video


def both_ways(videos: list[Path], folder: Path, workers: int = 1, levels: str = "native,15,8") -> tuple[dict, dict]:
    """(separate, fused) -> {"cuts": table, "motion": table}."""
    cfg, motion = cuts_config(levels), MotionConfig()
    run_cuts(videos, folder / "cuts_a.parquet", cfg)
    run_motion(folder / "cuts_a.parquet", folder / "motion_a.parquet", motion)
    summary, rows = run_cuts_motion(videos, folder / "cuts_b.parquet", cfg, motion, workers=workers)
    assert summary.complete
    write_motion_manifest(folder / "cuts_b.parquet", folder / "motion_b.parquet", rows, motion)
    return ({k: read_manifest(folder / f"{k}_{s}.parquet") for k in ("cuts", "motion")} for s in "ab")


@pytest.fixture(scope="module")
def pans(tmp_path_factory) -> list[Path]:
    """Two small videos: static, slow and fast pans joined by hard cuts."""
    folder = tmp_path_factory.mktemp("pans")
    paths = []
    for i in range(2):
        shots = [Shot(30, seed=i), Shot(30, seed=i + 5, speed=(0.7, 0.0)), Shot(30, seed=i + 9, speed=(4.0, 1.0))]
        write_video(folder / f"p{i}.mp4", shots, size=(320, 180), fps=30.0)
        paths.append(folder / f"p{i}.mp4")
    return paths


def test_one_pass_writes_the_manifests_of_two_stages_with_two_workers(pans, tmp_path):
    separate, fused = both_ways(pans, tmp_path, workers=2)
    assert fused["cuts"].equals(separate["cuts"])
    assert fused["motion"].equals(separate["motion"])  # bit-identical scores, same rows and columns
    scores = fused["motion"].column("motion_score").to_pylist()
    assert len(scores) == 6 and scores[0] < 0.1 < 0.25 < scores[1] < scores[2]


@pytest.mark.parametrize("name", ["goldeneye-vfr-drop3.mp4", "delayed_start.mp4", "issue-134-rotate.mp4"])
def test_real_clips_score_the_same_in_one_pass(testdata, tmp_path, name):
    """Variable frame rate with dropped frames, a non-zero first PTS and a rotated phone clip.

    delayed_start.mp4 is one fade-in from black, which the slow levels rightly call a transition
    (no clip left); the native level alone keeps its one clip, whose times are the point here."""
    levels = "native" if name == "delayed_start.mp4" else "native,15,8"
    separate, fused = both_ways([testdata / "pyscenedetect" / name], tmp_path, levels=levels)
    assert fused["cuts"].equals(separate["cuts"])
    assert fused["motion"].equals(separate["motion"])
    assert fused["motion"].column("motion_score").null_count == 0


def test_a_motion_failure_keeps_the_cuts(pans, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("flow exploded")

    monkeypatch.setattr(cuts_motion, "score_clips", fail)
    _, rows = run_cuts_motion(pans[:1], tmp_path / "cuts.parquet", cuts_config(), MotionConfig())
    cuts = read_manifest(tmp_path / "cuts.parquet")
    assert cuts.num_rows == 3 and set(cuts.column("status").to_pylist()) == {"ok"}
    assert rows.column("motion_error").to_pylist() == ["RuntimeError: flow exploded"] * 3
    assert rows.column("motion_score").null_count == 3


@pytest.mark.parametrize("max_memory", [256 << 20, 10_000])  # in memory; spilled to disk after a frame
def test_frame_store_answers_as_the_sparse_reader(pans, max_memory):
    size = (128, 72)
    with GrayFrameStore(lambda w, h: size, max_memory=max_memory) as store:
        info = decode_once(pans[0], [], frame_hooks=[store.feed])
        assert len(store.times) == info.frames == 90
        times = [-1.0, 0.0, 0.0166, 1 / 30, 1.01, 2.0, 2.95, 10.0]  # before the first, between, after the last
        frames, shown = store.frames_at(times)
    expected, expected_shown = read_gray_at(pans[0], times[1:], size)
    assert np.array_equal(frames[1:], expected) and shown[1:] == expected_shown
    assert np.array_equal(frames[0], frames[1]) and shown[0] == 0.0  # before the first: the first frame
    assert shown[-1] == pytest.approx(89 / 30)  # after the last: the last frame


def test_cli_motion_out_writes_both_manifests(pans, tmp_path):
    from typer.testing import CliRunner

    from svdcli.cli.main import app

    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    out, scored = tmp_path / "clips.parquet", tmp_path / "motion.parquet"
    result = CliRunner().invoke(app, ["curate", "cuts", str(pans[0]), str(junk), "--out", str(out),
                                      "--motion-out", str(scored), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "motion: 3 clips scored" in result.output and "1 below 0.25" in result.output
    run_motion(out, tmp_path / "separate.parquet")
    assert read_manifest(scored).equals(read_manifest(tmp_path / "separate.parquet"))
    assert read_manifest(scored).column("status").to_pylist() == ["ok"] * 3 + ["error"]


def test_a_video_too_long_for_the_store_is_read_again_with_the_same_scores(pans, tmp_path, monkeypatch):
    from svdcli.curate.stages import motion
    from svdcli.video import sparse

    reads = []
    counted = lambda *a, **k: reads.append("fused") or read_gray_at(*a, **k)  # noqa: E731
    monkeypatch.setattr(sparse, "read_gray_at", counted)
    streamed = lambda *a, **k: reads.append("separate") or sparse.iter_gray_at(*a, **k)  # noqa: E731
    monkeypatch.setattr(motion, "iter_gray_at", streamed)
    monkeypatch.setattr(cuts_motion, "STORE_BYTES", 3 * 320 * 180 // 4)  # 3 analysis frames: fewer than one clip needs
    separate, fused = both_ways(pans[:1], tmp_path)
    assert reads == ["separate", "fused"]  # the separate motion stage, and the fallback after the overflowing pass
    assert fused["motion"].equals(separate["motion"])


def test_store_gives_up_past_its_limit_and_frees_its_file(pans):
    with GrayFrameStore(lambda w, h: (64, 36), max_bytes=64 * 36 * 10) as store:
        decode_once(pans[0], [], frame_hooks=[store.feed])
        assert store.overflowed and store.times == [] and store.file.closed
        with pytest.raises(ValueError, match="gave up"):
            store.frames_at([0.0])


def recorded_one_pass(monkeypatch) -> tuple[list, list, list]:
    """Patch the fused pass to record its frame stores, the pairs scored before `score_clips`
    ran (during the decode) and its reads of the file after the pass."""
    from svdcli.video import gray, sparse

    stores, prescored, reads = [], [], []

    class Recording(gray.GrayFrameStore):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    score = cuts_motion.score_clips

    def scoring(clips, read, cfg, threads=1, scorer=None):
        prescored.append(len(scorer.futures))
        return score(clips, read, cfg, threads, scorer)

    monkeypatch.setattr(gray, "GrayFrameStore", Recording)
    monkeypatch.setattr(cuts_motion, "score_clips", scoring)
    monkeypatch.setattr(sparse, "read_gray_at", lambda *a, **k: reads.append(a[1]) or read_gray_at(*a, **k))
    return stores, prescored, reads


def test_one_pass_converts_and_scores_the_likely_pairs_while_it_decodes(tmp_path, monkeypatch):
    """Clips that start at hard cuts: of the video's 240 frames only the 40 its 20 pairs show are
    converted, the pairs of all but the last clip are scored before the pass ends (the last
    ones wait for the slow levels' verdict on the end of the video), and nothing is read again."""
    video = tmp_path / "cuts.mp4"
    shots = [Shot(60, seed=seed, speed=(speed, 0.5)) for seed, speed in ((1, 0.5), (6, 2.0), (10, 0.0), (14, 3.0))]
    write_video(video, shots, size=(320, 180), fps=24.0)
    stores, prescored, reads = recorded_one_pass(monkeypatch)
    separate, fused = both_ways([video], tmp_path)
    assert fused["cuts"].equals(separate["cuts"]) and fused["motion"].equals(separate["motion"])
    assert fused["motion"].column("motion_pairs").to_pylist() == [5] * 4  # 4 clips of 2.5 s
    assert len(stores[0].times) == 240  # every frame's time is known...
    assert stores[0].kept == 40  # ...but only the pairs' frames were converted
    assert prescored[0] >= 12 and reads == []


def test_the_clip_after_a_dissolve_starts_where_the_levels_settle_it_during_the_pass(tmp_path, monkeypatch):
    """The slow levels suspect the dissolve as it passes and settle where its new shot starts a
    few seconds later (`Cascade.settled`), long before the pass ends: the frames of the span are
    held until then, and only the pairs' frames are kept (a grid that runs on past its clip's
    end keeps a few more), the pairs after the dissolve are scored while decoding, nothing is
    read again and the scores are the separate stage's."""
    from svdcli.video.synth import Transition

    video = tmp_path / "dissolve.mp4"
    shots = [Shot(48, seed=1, speed=(1.0, 0.0)), Shot(72, seed=6, speed=(2.0, 0.5)), Shot(96, seed=10)]
    write_video(video, shots, [Transition("dissolve", 24), Transition("cut")], size=(320, 180), fps=24.0)
    stores, prescored, reads = recorded_one_pass(monkeypatch)
    separate, fused = both_ways([video], tmp_path)
    assert fused["cuts"].equals(separate["cuts"]) and fused["motion"].equals(separate["motion"])
    levels = fused["cuts"].column("start_levels").to_pylist()
    assert len(levels) == 3 and "native" not in levels[1] and "native" in levels[2]  # the dissolve, the cut
    pairs = fused["motion"].column("motion_pairs").to_pylist()
    kept = [t for t, slot in zip(stores[0].times, stores[0].slots) if slot >= 0]
    assert reads == []  # nothing read again
    assert 2 * sum(pairs) <= len(kept) <= 2 * sum(pairs) + 4, kept  # not every frame of the span
    assert prescored[0] >= pairs[0] + pairs[1]  # the dissolve's clip was scored during the pass


def test_settled_boundaries_are_the_final_ones_as_the_video_passes(tmp_path):
    """At every point of the pass, what `Cascade.settled` reports up to its horizon is exactly
    what `boundaries` reports at the end, on dissolves, a fade, hard cuts and pans without a
    cut; the horizon follows the decode a few seconds behind."""
    from svdcli.curate.stages.cuts import CutsStage, cuts_config
    from svdcli.video.synth import Transition

    # the cut suite's same-palette dissolves and fade (`write_cut_suite`), then a cut to a fast pan
    shots = [Shot(96, seed=31, tint=7, speed=(0.6, 0.0)), Shot(96, seed=32, tint=7, speed=(-0.5, 0.2)),
             Shot(96, seed=33, tint=7, speed=(0.4, -0.3)), Shot(96, seed=34, tint=7), Shot(72, seed=50, speed=(5.0, 1.0))]
    transitions = [Transition("dissolve", 24), Transition("dissolve", 24), Transition("fade", 12), Transition("cut")]
    write_video(tmp_path / "v.mp4", shots, transitions, size=(160, 96), fps=24.0)
    cascade = CutsStage(cuts_config("native,15,8")).detector()
    seen = []

    def look(t, frame):
        found, until = cascade.settled(0.0)
        seen.append((t, until, [b.first_new for b in found]))

    decode_once(tmp_path / "v.mp4", cascade.consumers(), frame_hooks=[look])
    final = [b.first_new for b in cascade.boundaries()]
    assert len(final) >= 4
    for t, until, found in seen:
        assert found == [f for f in final if 0.0 < f <= until], (t, until)
    lags = [t - until for t, until, _ in seen if until > 0]
    assert len(lags) > len(seen) // 2 and float(np.median(lags)) < 4.0
    assert all(f <= seen[-1][1] for f in final[:-1])  # all but the last settled before the end


def test_store_keeps_what_its_selector_wants_and_every_time(pans):
    class Odd:
        def __init__(self):
            self.took_times = []

        def wants(self, t, next_t):
            return round(t * 30) % 2 == 1

        def took(self, t, gray):
            self.took_times.append(t)

    odd = Odd()
    with GrayFrameStore(lambda w, h: (64, 36), select=odd) as store:
        decode_once(pans[0], [], frame_hooks=[store.feed])
        store.finish()
        frames, shown = store.kept_at([0.0, 1 / 30, 0.5 + 1 / 60])
        assert store.kept == 45 and len(store.times) == 90 and len(odd.took_times) == 45
        assert frames[0] is None and frames[1] is not None and shown == pytest.approx([0.0, 1 / 30, 0.5])
        with pytest.raises(ValueError, match="not kept"):
            store.frames_at([0.0])

    class Undecided(Odd):
        def wants(self, t, next_t):
            return None  # never sure: past `hold_bytes` of held pictures the store keeps them all

    with GrayFrameStore(lambda w, h: (64, 36), select=Undecided(), hold_bytes=0) as store:
        decode_once(pans[0], [], frame_hooks=[store.feed])
        store.finish()
        assert store.kept == 90 and not store.pending
