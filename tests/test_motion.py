"""Motion scores: static vs panning shots of known speed, sizes, boundary frames, error rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numeric import assert_ulp_distance
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.curate.stages.motion import PAIR_GAP, MotionConfig, flow_size, motion_score, run_motion, sample_pairs
from svdcli.manifest.io import read_manifest, table_from_rows, write_manifest
from svdcli.video.sparse import read_gray_at
from svdcli.video.synth import Shot, write_video

FPS = 24.0
CLIP_COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
                "num_frames", "fps", "width", "height", "status"]


def clip_rows(video: Path, bounds: list[int], fps: float, size: tuple[int, int], tag: str = "v") -> list[dict]:
    """Manifest rows for clips [bounds[i], bounds[i+1]) of one video, as cuts would write them."""
    return [{"clip_id": f"{tag}_{a}_{b}", "video_id": tag, "video_path": str(video), "start_time": a / fps,
             "end_time": b / fps, "start_frame": a, "end_frame": b, "num_frames": b - a, "fps": fps,
             "width": size[0], "height": size[1], "status": "ok"} for a, b in zip(bounds, bounds[1:])]


def write_rows(rows: list[dict], path: Path) -> Path:
    return write_manifest(table_from_rows(rows, CLIP_COLUMNS), path, record={"stage": "cuts", "settings": {}})


def expected(px_per_frame: float, width: int, fps: float = FPS) -> float:
    """The score a pan of `px_per_frame` source pixels should get: analysis px per 1/15 s."""
    return px_per_frame * flow_size(width, 1)[0] / width * fps * PAIR_GAP


@pytest.fixture(scope="module")
def pans(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """One 320x180 video: static, slow, medium and fast horizontal pans joined by hard cuts."""
    folder = tmp_path_factory.mktemp("motion")
    speeds = {"static": 0.0, "slow": 0.5, "medium": 2.0, "fast": 6.0}
    shots = [Shot(36, seed=i, speed=(s, 0.0)) for i, s in enumerate(speeds.values())]
    video = folder / "pans.mp4"
    write_video(video, shots, size=(320, 180), fps=FPS)
    rows = clip_rows(video, [0, 36, 72, 108, 144], FPS, (320, 180))
    for row, name in zip(rows, speeds):
        row["clip_id"] = name
    manifest = write_rows(rows, folder / "clips.parquet")
    run_motion(manifest)
    table = read_manifest(manifest)
    return table, speeds


def test_static_is_below_threshold_and_pans_above(pans):
    table, _ = pans
    score = dict(zip(table.column("clip_id").to_pylist(), table.column("motion_score").to_pylist()))
    assert score["static"] < 0.1
    assert score["slow"] > 0.25
    assert score["static"] < score["slow"] < score["medium"] < score["fast"]


def test_score_matches_known_pan_speed(pans):
    table, speeds = pans
    for cid, value in zip(table.column("clip_id").to_pylist(), table.column("motion_score").to_pylist()):
        if speeds[cid]:
            assert value == pytest.approx(expected(speeds[cid], 320), rel=0.15), cid


def test_same_motion_scores_the_same_at_any_resolution(tmp_path):
    """A pan of 1/640 of the width per frame, rendered at 320x180 and 1280x720."""
    rows = []
    for width, height, speed in ((320, 180, 0.5), (1280, 720, 2.0)):
        video = tmp_path / f"pan{width}.mp4"
        write_video(video, [Shot(24, seed=7, speed=(speed, 0.0))], size=(width, height), fps=FPS)
        rows += clip_rows(video, [0, 24], FPS, (width, height), tag=str(width))
    manifest = write_rows(rows, tmp_path / "m.parquet")
    run_motion(manifest)
    small, large = read_manifest(manifest).column("motion_score").to_pylist()
    assert small == pytest.approx(large, rel=0.1)
    assert large > 0.25  # 2 px/frame at 1280x720 is a slow pan, but a moving one
    run_motion(manifest, tmp_path / "pool.parquet", workers=2)  # one video per worker
    # the same flow in another process (another thread count): equal to float32 rounding
    assert read_manifest(tmp_path / "pool.parquet").column("motion_score").to_pylist() == pytest.approx([small, large], rel=1e-6)


def test_clip_starting_on_the_previous_shot_is_still_static(tmp_path):
    """Cut detection one frame late: the clip's first frame belongs to another shot."""
    video = tmp_path / "cut.mp4"
    write_video(video, [Shot(30, seed=1), Shot(48, seed=2)], size=(320, 180), fps=FPS)
    manifest = write_rows(clip_rows(video, [29, 78], FPS, (320, 180)), tmp_path / "m.parquet")
    no_margin = MotionConfig(margin_frames=0)  # the margin alone would hide the boundary frame
    run_motion(manifest, cfg=no_margin)
    row = read_manifest(manifest).to_pylist()[0]
    assert max(row["motion_pair_scores"]) > 0.25, "the boundary pair should look like motion"
    assert row["motion_score"] < 0.1
    run_motion(manifest)  # default margins skip the boundary frame entirely
    assert max(read_manifest(manifest).to_pylist()[0]["motion_pair_scores"]) < 0.1


def test_scorer_median_ignores_one_outlier_pair():
    rng = np.random.default_rng(0)
    still = (rng.random((72, 128)) * 255).astype(np.uint8)
    other = (rng.random((72, 128)) * 255).astype(np.uint8)
    pairs = np.stack([np.stack([other, still])] + [np.stack([still, still])] * 3)  # (4, 2, 72, 128)
    score, values = motion_score(pairs, [1 / 30] * 4)
    assert score == pytest.approx(0.0, abs=1e-3)
    assert values[0] > 0.25


def test_pairs_are_scored_while_later_frames_are_still_being_read():
    """`svd curate motion` overlaps decoding and Farneback: a pair goes to the scoring thread as
    soon as its second frame is read, and each pair's value is the one scored after the read."""
    from svdcli.curate.stages.motion import PairScorer, pair_measures, score_clips

    rng = np.random.default_rng(3)
    base = (rng.random((76, 128)) * 255).astype(np.uint8)
    clip = {"clip_id": "c", "start_time": 0.0, "end_time": 3.0, "fps": 30.0, "num_frames": 90}
    wanted = sorted({t for pair in sample_pairs(0.0, 3.0, 30.0) for t in pair})
    frames = {t: np.roll(base, int(t * 90), axis=1) for t in wanted}  # a pan of 3 px per frame
    submitted_while_reading = []

    with PairScorer(MotionConfig()) as scorer:
        def read(times):
            for i, t in enumerate(times):
                if i >= 2:  # the first pair's frames were handed over: it is being scored already
                    submitted_while_reading.append(len(scorer.futures))
                yield frames[t], t

        row = score_clips([clip], read, MotionConfig(), scorer=scorer)[0]
    assert submitted_while_reading[0] == 1 and submitted_while_reading[-1] == len(wanted) // 2 - 1
    pairs = np.stack([[frames[a], frames[b]] for a, b in sample_pairs(0.0, 3.0, 30.0)])  # (P, 2, h, w)
    expected = [v for v, _ in pair_measures(pairs, [b - a for a, b in sample_pairs(0.0, 3.0, 30.0)])]
    assert_ulp_distance(np.array(row["motion_pair_scores"]), np.array(expected))  # same frames, same function
    assert row["motion_score"] == pytest.approx(6.0, rel=0.1)  # 6 px per pair of frames 1/15 s apart


def test_sample_pairs_follow_2fps_inside_the_clip():
    pairs = sample_pairs(1.0, 3.0, 30.0)  # 60 frames: pairs every 0.5 s, margins of 2 frames
    assert len(pairs) == 4
    assert all(1.0 + 2 / 30 <= a < b < 3.0 - 2 / 30 for a, b in pairs)
    assert np.allclose(np.diff([a for a, _ in pairs]), 0.5)
    assert np.allclose([b - a for a, b in pairs], 2 / 30)  # 1/15 s: two frames at 30 fps
    assert len(sample_pairs(0.0, 3 / 30, 30.0)) == 1  # too short for margins: sampled without
    assert sample_pairs(0.0, 2 / 30, 30.0) == [(0.5 / 30, 1.5 / 30)]  # too short for the gap: adjacent
    assert sample_pairs(0.0, 1 / 30, 30.0) == []  # one frame: nothing to compare


def test_sparse_reader_returns_the_frames_a_full_decode_would(tmp_path):
    """Skipping non-reference H.264 frames must not change a single sampled pixel."""
    from svdcli.video.seek import read_frames_at

    video = tmp_path / "b.mp4"
    write_video(video, [Shot(40, seed=1, speed=(3.0, 1.0)), Shot(60, seed=2, speed=(-2.0, 0.0))],
                size=(160, 96), fps=FPS, gop=30)
    rng = np.random.default_rng(0)
    for times in ([t for pair in sample_pairs(0, 100 / FPS, FPS) for t in pair],
                  sorted(rng.uniform(0, 100 / FPS, 25)), [0.0, 3.9, 4.1]):
        expected_frames = read_frames_at(video, times, size=(128, 76), fmt="gray")
        assert np.array_equal(read_gray_at(video, times, (128, 76))[0], expected_frames)


def test_unreadable_and_too_short_clips_get_error_rows(tmp_path):
    video = tmp_path / "ok.mp4"
    write_video(video, [Shot(24, seed=3, speed=(2.0, 0.0))], size=(160, 96), fps=FPS)
    rows = clip_rows(video, [0, 1, 24], FPS, (160, 96))  # a 1-frame clip and a normal one
    rows += clip_rows(tmp_path / "missing.mp4", [0, 24], FPS, (160, 96), tag="gone")
    manifest = write_rows(rows, tmp_path / "m.parquet")
    result, _ = run_motion(manifest)
    got = {r["clip_id"]: r for r in read_manifest(manifest).to_pylist()}
    assert "too short" in got["v_0_1"]["motion_error"]
    assert "not found" in got["gone_0_24"]["motion_error"]
    assert got["v_1_24"]["motion_score"] > 0.25 and got["v_1_24"]["motion_error"] is None
    assert result.errors == 2


def test_cli_scores_to_a_new_file_and_reports_user_errors(tmp_path, pans):
    video = Path(pans[0].column("video_path")[0].as_py())
    manifest = write_rows(clip_rows(video, [0, 36, 72], FPS, (320, 180)), tmp_path / "in.parquet")
    out = tmp_path / "out.parquet"
    result = CliRunner().invoke(app, ["curate", "motion", "--manifest", str(manifest), "--out", str(out),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "2 clips scored" in result.output and "1 below 0.25" in result.output
    assert "motion_score" not in read_manifest(manifest).column_names  # input left untouched
    missing = CliRunner().invoke(app, ["curate", "motion", "--manifest", str(tmp_path / "nope.parquet")])
    assert missing.exit_code == 2 and "manifest not found" in missing.output
    assert "Traceback" not in missing.output


def test_real_clips_slides_are_static_and_sparse_decode_is_exact(testdata, tmp_path):
    """A screen recording of slides is the README's motion negative; real x264 has B-frames."""
    from svdcli.video.probe import probe
    from svdcli.video.seek import read_frames_at

    slides = testdata / "video2dataset" / "test_video.mp4"
    info = probe(slides)
    rows = [{"clip_id": "slides", "video_path": str(slides), "start_time": 2.0, "end_time": 6.0,
             "start_frame": 60, "end_frame": 180, "num_frames": 120, "fps": info.fps, "width": info.width,
             "height": info.height, "status": "ok"}]
    manifest = write_rows(rows, tmp_path / "m.parquet")
    run_motion(manifest)
    assert read_manifest(manifest).column("motion_score")[0].as_py() < 0.25
    video = testdata / "pyscenedetect" / "testvideo.mp4"
    times = [t for pair in sample_pairs(0.0, 24.0, 30000 / 1001) for t in pair]
    assert np.array_equal(read_gray_at(video, times, (256, 144))[0],
                          read_frames_at(video, times, size=(256, 144), fmt="gray"))


def write_vfr(path: Path, frames: np.ndarray, fps: int, keep: list[int]) -> None:
    """Encode only the frames in `keep`, each at its own time k / fps: a variable-rate video."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for k in keep:
            frame = av.VideoFrame.from_ndarray(frames[k], format="rgb24")
            frame.pts, frame.time_base = k, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def test_dropped_frames_do_not_change_the_score(tmp_path):
    """Every third frame missing (VFR): pairs use the real time between the frames shown."""
    from svdcli.video.synth import render_shot

    frames = render_shot(Shot(72, seed=4, speed=(2.0, 0.0)), 96, 160)
    write_vfr(tmp_path / "cfr.mp4", frames, 24, list(range(72)))
    write_vfr(tmp_path / "vfr.mp4", frames, 24, [k for k in range(72) if k % 3 != 2])
    rows = clip_rows(tmp_path / "cfr.mp4", [0, 72], FPS, (160, 96), tag="cfr")
    rows += clip_rows(tmp_path / "vfr.mp4", [0, 72], FPS, (160, 96), tag="vfr")
    manifest = write_rows(rows, tmp_path / "m.parquet")
    run_motion(manifest)
    cfr, vfr = read_manifest(manifest).column("motion_score").to_pylist()
    assert cfr == pytest.approx(expected(2.0, 160), rel=0.1)
    assert vfr == pytest.approx(cfr, rel=0.1)


def test_motion_units_are_defined_once_and_referenced_elsewhere():
    from svdcli.curate.stages.motion import ANALYSIS_LONG_SIDE, MOTION_UNITS
    from svdcli.manifest.schema import COLUMNS
    from svdcli.shards import micro_conditioning as conditioning

    assert f"long side {ANALYSIS_LONG_SIDE} px" in MOTION_UNITS and "1/15 s" in MOTION_UNITS
    assert MOTION_UNITS in COLUMNS["motion_score"].doc  # the manifest column says the same
    # the conditioning docs point at the stage's definition instead of restating another one
    assert "MOTION_UNITS" in conditioning.__doc__
    assert "1/30" not in conditioning.__doc__ and "512" not in conditioning.__doc__


def test_a_worker_reads_and_scores_on_its_share_of_the_cores(monkeypatch, tmp_path):
    """One local worker reads GOPs and scores pairs on every core, several split them, and a
    worker an executor places (Ray) keeps to the one core it reserves."""
    import os

    from svdcli.curate.stages import motion

    seen = []
    monkeypatch.setattr(motion, "run_clip_stage", lambda stage, *a, **k: seen.append(stage.threads))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for kwargs in ({}, {"workers": 1}, {"workers": 2}, {"workers": 16}, {"executor": object()}):
        motion.run_motion(tmp_path / "m.parquet", **kwargs)
    assert seen == [8, 8, 4, 1, 1]


def test_a_video_cut_off_part_way_scores_the_clips_before_the_damage(tmp_path):
    """A file that stops decoding part-way (an upload cut off after the cuts ran): the clips read
    before the damage get the intact file's scores, the others the error naming where it stopped."""
    from odd_files import cut_off

    from svdcli.curate.stages.motion import MotionStage

    written = tmp_path / "v.mp4"
    write_video(written, [Shot(48, seed=s, speed=(2.0, 0.5)) for s in (1, 2, 3, 4)], size=(160, 96), fps=FPS, gop=12)
    intact, damaged = cut_off(written, tmp_path)
    clips = clip_rows(intact, [0, 48, 96, 144, 192], FPS, (160, 96))

    whole = MotionStage(threads=2).process({"video_path": str(intact), "clips": clips})
    cut = MotionStage(threads=2).process({"video_path": str(damaged), "clips": clips})
    assert all("motion_error" not in r for r in whole)
    scored = [r for r in cut if "motion_error" not in r]
    assert 1 <= len(scored) < len(clips)
    assert scored == whole[:len(scored)]  # the same scores, pair for pair
    for row in cut[len(scored):]:
        assert row["motion_error"].startswith("VideoError: decoding failed after the frame at "), row
