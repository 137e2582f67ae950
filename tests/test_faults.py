"""Odd and broken inputs, as a new user feeds them: every one gets its row (or a clear line), and
the exit code says whether the run gave anything. Disk faults: test_faults_disk.py; signals and
concurrent runs: test_faults_signals.py. The tables live in tests/bad_inputs.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_inputs import ODD_VIDEOS, assert_error_line
from odd_files import make
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.manifest.io import read_manifest, table_from_rows, write_manifest
from svdcli.video.decode import TimestampCheck


def invoke(*args):
    return CliRunner(env={"COLUMNS": "10000"}).invoke(app, [str(a) for a in args])


FRAMES = {"one_frame": 1, "two_frames": 2, "short_real": 23}


# --- one odd input: its row, and exit 1 because nothing gave a clip ---------------------------
@pytest.mark.parametrize("kind", ODD_VIDEOS)
def test_an_odd_input_alone_gets_its_row_and_exits_1(kind, tmp_path):
    status, words = ODD_VIDEOS[kind]
    video = make(kind, tmp_path / "in")
    out = tmp_path / "clips.parquet"
    result = invoke("curate", "cuts", video, "--out", out, "--min-length", 1, "--no-progress")
    said = f"{video}: VideoError: " if status == "error" else "1 piece shorter than --min-length"
    assert_error_line(result, 1, "no clips from 1 video", said)
    [row] = read_manifest(out).to_pylist()  # the row is written before the run is judged
    assert row["status"] == status and words in row["error"], row
    if status == "short":  # every decoded frame is in the row
        assert (row["start_frame"], row["end_frame"], row["num_frames"]) == (0, FRAMES[kind], FRAMES[kind])


def test_a_folder_of_odd_files_gets_a_row_each_and_says_what_it_skipped(tmp_path):
    folder = tmp_path / "in"
    for kind in ODD_VIDEOS:
        make(kind, folder)
    (folder / "album.mp4").mkdir()
    (folder / ".DS_Store").write_bytes(b"\0\1")
    (folder / "notes.txt").write_text("not a video")
    out = tmp_path / "clips.parquet"
    result = invoke("curate", "cuts", folder, "--out", out, "--min-length", 1, "--no-progress")
    assert_error_line(result, 1, "no clips from 12 videos: 9 could not be read, 3 pieces shorter than --min-length")
    rows = read_manifest(out).to_pylist()
    by_name = {Path(r["video_path"]).name: r["status"] for r in rows}
    assert len(rows) == 12 and sorted(by_name.values()).count("short") == 3
    assert "mp3_cover.mp3" not in by_name and "joined_ts.ts" in by_name
    line = " ".join(result.output.split())
    assert ("skipped 6 entries of the input folders: 2 broken link, 1 folder named like a video, 1 hidden, "
            "1 not a video type (.mp3), 1 not a video type (.txt) (--verbose lists them)") in line, result.output
    assert "notes.txt" not in result.output
    listed = invoke("curate", "cuts", folder, "--out", out, "--min-length", 1, "--no-progress", "--verbose")
    for name, why in [("notes.txt", "not a video type (.txt)"), ("mp3_cover.mp3", "(.mp3)"), ("album.mp4", "folder"),
                      (".DS_Store", "hidden"), ("symlink_loop_b.mp4", "broken link")]:
        assert f"{folder / name}: " in listed.output and why in listed.output, (name, listed.output)


def test_a_folder_with_no_video_names_what_it_passed_over(tmp_path):
    make("mp3_cover", tmp_path / "in")
    result = invoke("curate", "cuts", tmp_path / "in", "--out", tmp_path / "m.parquet", "--no-progress")
    assert_error_line(result, 2, "no videos found", "skipped 1 entries", "not a video type (.mp3)")


# --- --max-error-rate -----------------------------------------------------------------------
@pytest.fixture()
def mixed(tmp_path) -> Path:
    folder = tmp_path / "mixed"
    for kind in ("good", "empty", "png"):
        make(kind, folder)
    return folder


@pytest.mark.parametrize("rate, code", [(None, 0), (0.7, 0), (0.5, 1), (0.0, 1)])
def test_max_error_rate_fails_a_run_after_writing_its_rows(mixed, tmp_path, rate, code):
    out = tmp_path / "clips.parquet"
    args = ["curate", "cuts", mixed, "--out", out, "--no-progress"] + (["--max-error-rate", rate] if rate is not None
                                                                       else [])
    result = invoke(*args)
    if code:
        assert_error_line(result, 1, "cuts: 2 of 3 videos failed (66.7%)", f"above --max-error-rate {rate:g}",
                          str(mixed / "empty.mp4"))
    else:
        assert result.exit_code == 0, result.output
    assert [r["status"] for r in read_manifest(out).to_pylist()].count("error") == 2


def test_max_error_rate_out_of_range_is_a_usage_error(mixed, tmp_path):
    result = invoke("curate", "cuts", mixed, "--out", tmp_path / "m.parquet", "--max-error-rate", 1.5)
    assert result.exit_code == 2 and "--max-error-rate" in result.output and not (tmp_path / "m.parquet").exists()


RECIPE = """
name: small
report: false
max_error_rate: {rate}
stages:
  cuts: {{}}
  motion: {{}}
"""


def test_a_recipe_stops_after_a_stage_above_its_max_error_rate_and_goes_on_when_allowed(mixed, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(rate=0.5))
    work = tmp_path / "work"
    result = invoke("curate", "run", recipe, "--input", mixed, "--workdir", work, "--no-progress")
    assert_error_line(result, 1, "cuts: 2 of 3 videos failed (66.7%), above max_error_rate 0.5")
    assert (work / "manifests/cuts.parquet").exists() and not (work / "manifests/motion.parquet").exists()
    result = invoke("curate", "run", recipe, "--input", mixed, "--workdir", work, "--no-progress",
                    "--max-error-rate", 0.9)
    assert result.exit_code == 0, result.output
    assert "cuts     skipped" in result.output and "motion   ran" in result.output
    assert "motion   ran            3 rows, 0 errors" in result.output  # the one clip scored, no error


def test_a_recipe_whose_every_video_fails_exits_1_after_cuts(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(rate=1.0))
    make("png", tmp_path / "in")
    result = invoke("curate", "run", recipe, "--input", tmp_path / "in", "--workdir", tmp_path / "w", "--no-progress")
    assert_error_line(result, 1, "no clips from 1 video", "an image (png)")
    assert "1 rows, 1 errors" in result.output


def test_a_bad_max_error_rate_in_a_recipe_is_refused_naming_it(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(rate="lots"))
    result = invoke("curate", "run", recipe, "--input", tmp_path, "--workdir", tmp_path / "w")
    assert_error_line(result, 2, str(recipe), "'max_error_rate' must be a number from 0 to 1")


# --- timestamps ---------------------------------------------------------------------------------
def test_timestamp_check_tells_a_restart_from_stray_duplicates_and_finds_holes():
    def feed(times):
        check, last, kept = TimestampCheck(24.0), None, 0
        for i, t in enumerate(times):
            if check.see(i, last, t):
                last, kept = t, kept + 1
        return check, kept

    steady = [i / 24 for i in range(48)]
    check, kept = feed(steady)
    assert (check.dropped, check.gaps, check.restarted, kept) == (0, [], False, 48)
    check, kept = feed(steady[:10] + [steady[9]] + steady[10:])  # one duplicate: dropped, no restart
    assert (check.dropped, check.restarted, kept) == (1, False, 48)
    check, kept = feed(steady[:36] + steady[:36])  # joined end to end
    assert check.restarted and check.dropped == 36 and check.back == (36, pytest.approx(35 / 24), 0.0) and kept == 36
    check, _ = feed(steady[:24] + [3 + i / 24 for i in range(24)])
    assert check.gaps == [(pytest.approx(23 / 24), 3.0)] and not check.restarted
    assert feed(steady[:24] + [1.9 + i / 24 for i in range(24)])[0].gaps == []  # 0.9 s: no hole


def test_a_hole_in_the_timestamps_is_a_boundary_and_rows_cover_every_frame(tmp_path):
    video = make("hole", tmp_path)
    out = tmp_path / "clips.parquet"
    result = invoke("curate", "cuts", video, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    rows = read_manifest(out).to_pylist()
    assert [(r["status"], r["start_frame"], r["end_frame"], r["start_cause"]) for r in rows] == [
        ("ok", 0, 24, "video_start"), ("ok", 72, 96, "gap")]
    assert sum(r["num_frames"] for r in rows) == 48  # the frames decoded, none frozen over the hole


def test_joined_files_are_an_error_row_naming_the_jump_not_silently_half_a_video(tmp_path):
    video = make("joined_ts", tmp_path)
    [row] = _cuts_rows(video, tmp_path)
    assert row["status"] == "error"
    assert "timestamps go back from 1.46 s to 0.00 s at frame 36 (36 of 72 frames" in row["error"]


def _cuts_rows(video: Path, tmp_path: Path) -> list[dict]:
    out = tmp_path / "clips.parquet"
    invoke("curate", "cuts", video, "--out", out, "--no-progress")
    return read_manifest(out).to_pylist()


# --- svd pack: 0 of N clips packed ---------------------------------------------------------------
PACK_COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
                "num_frames", "fps", "width", "height", "status", "keep"]


def _pack_manifest(folder: Path, kinds: list[str]) -> Path:
    rows = []
    for kind in kinds:
        video = make(kind, folder)
        rows.append(dict(clip_id=f"{kind}_0_24", video_id=kind, video_path=str(video), start_time=0.0, end_time=1.0,
                         start_frame=0, end_frame=24, num_frames=24, fps=24.0, width=160, height=96, status="ok",
                         keep=True))
    return write_manifest(table_from_rows(rows, PACK_COLUMNS), folder / "kept.parquet")


PACK = ["--workers", 1, "--size", "64x64", "--frames", 4, "--format", "npy"]


def test_a_pack_of_no_sample_exits_1_with_the_reason_and_its_stats(tmp_path):
    manifest = _pack_manifest(tmp_path / "in", ["random", "text"])
    result = invoke("pack", "--manifest", manifest, "--out", tmp_path / "shards", *PACK)
    assert_error_line(result, 1, "no sample packed: all 2 selected clips were skipped (decode_error: 2)",
                      "e.g. clip ")
    stats = json.loads((tmp_path / "shards/stats.json").read_text())
    assert stats["samples"] == 0 and len(stats["skipped_clips"]) == 2


def test_pack_max_error_rate(tmp_path):
    manifest = _pack_manifest(tmp_path / "in", ["good", "random"])
    assert invoke("pack", "--manifest", manifest, "--out", tmp_path / "a", *PACK).exit_code == 0
    result = invoke("pack", "--manifest", manifest, "--out", tmp_path / "b", *PACK, "--max-error-rate", 0.25)
    assert_error_line(result, 1, "1 of 2 clips could not be decoded (50.0%), above --max-error-rate 0.25",
                      "clip random_0_24")
    assert json.loads((tmp_path / "b/stats.json").read_text())["samples"] == 1


# --- svd sample: checked before any model loads ---------------------------------------------------
@pytest.fixture()
def no_model(monkeypatch):
    from svdcli.sample import pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(pipeline.VideoPipeline, "from_checkpoint", classmethod(refuse))


def test_sample_image_that_is_a_folder_says_so(tmp_path, no_model):
    (tmp_path / "frames").mkdir()
    result = invoke("sample", "--image", tmp_path / "frames", "--checkpoint", tmp_path / "x.safetensors",
                    "--out", tmp_path / "v.mp4")
    assert_error_line(result, 2, f"--image {tmp_path / 'frames'} is a folder")


def test_sample_checks_where_it_writes_before_sampling(tmp_path, no_model):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "cond.png")
    (tmp_path / "taken").write_text("a file where a folder should be")
    result = invoke("sample", "--image", tmp_path / "cond.png", "--checkpoint", tmp_path / "x.safetensors",
                    "--out", tmp_path / "taken/v.mp4")
    assert_error_line(result, 2, f"--out {tmp_path / 'taken/v.mp4'}", "is a file, not a folder")


# --- svd train on shards whose every sample is garbage ---------------------------------------------
def test_training_on_shards_of_garbage_says_every_sample_failed_and_names_some(tmp_path):
    import io
    import tarfile

    from test_bad_inputs import _train_args
    from test_train_helpers import make_shards

    shards = make_shards(tmp_path / "data")
    for shard in sorted(shards.glob("*.tar")):
        with tarfile.open(shard) as tin:
            members = [(m, tin.extractfile(m).read()) for m in tin]
        with tarfile.open(shard, "w") as tout:
            for member, body in members:
                body = b"\x00garbage" * 8 if member.name.endswith(".npy") else body
                member.size = len(body)
                tout.addfile(member, io.BytesIO(body))
    with pytest.warns(UserWarning, match="skipping sample"):
        result = invoke(*_train_args(shards, tmp_path / "run"))
    assert_error_line(result, 2, "none of the 8 samples of the 4 shards can be used: every one failed to decode",
                      "_0_4: ValueError: ", "repack the shards")
