"""`svd curate run`: stages in order, skipped when unchanged, resumed after an interruption."""
from __future__ import annotations

from pathlib import Path

import pytest
from bad_inputs import BAD_MANIFESTS, assert_one_line_error, bad_manifest
from test_motion import clip_rows, write_rows
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.curate import stages
from svdcli.curate.stages.cuts_motion import CutsMotionStage
from svdcli.curate.stages.motion import MotionStage, run_motion
from svdcli.curate.recipe import RecipeError, RunOptions, load_recipe, run_recipe
from svdcli.errors import SvdError
from svdcli.manifest.io import manifest_history, read_manifest
from svdcli.video.synth import Shot, write_video

FPS = 24.0
RECIPE = """
name: small
report: false
stages:
  motion: {}
  filter:
    rules: ["motion_score >= 0.25"]
"""


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Three small videos, each a static shot then a pan, joined by a hard cut at 1 s."""
    folder = tmp_path_factory.mktemp("videos")
    for i in range(3):
        shots = [Shot(24, seed=i), Shot(24, seed=i + 10, speed=(1.0 + i, 0.0))]
        write_video(folder / f"v{i}.mp4", shots, size=(160, 96), fps=FPS)
    return folder


@pytest.fixture(scope="module")
def corpus(videos, tmp_path_factory) -> Path:
    """A cuts-style manifest of those videos (6 clips), for runs that start after cuts."""
    rows = []
    for i in range(3):
        rows += clip_rows(videos / f"v{i}.mp4", [0, 24, 48], FPS, (160, 96), tag=f"v{i}")
    return write_rows(rows, tmp_path_factory.mktemp("corpus") / "clips.parquet")


def recipe_file(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def run(tmp_path: Path, corpus: Path, workdir: str, overrides: list[str] = ()) -> list:
    plan = load_recipe(recipe_file(tmp_path), overrides)
    return run_recipe(plan, tmp_path / workdir, manifest=corpus, opts=RunOptions())


def run_with_cuts(tmp_path: Path, videos: Path, workdir: str) -> list:
    plan = load_recipe(recipe_file(tmp_path, RECIPE.replace("stages:", "stages:\n  cuts: {}")))
    return run_recipe(plan, tmp_path / workdir, videos=videos, opts=RunOptions())


def interrupt_second_call(monkeypatch, cls) -> list:
    """Make `cls.process` raise KeyboardInterrupt on its second call (once); returns the calls."""
    original = cls.process
    calls, interrupted = [], []

    def process(self, payload):
        calls.append(payload)
        if len(calls) == 2 and not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return original(self, payload)

    monkeypatch.setattr(cls, "process", process)
    return calls


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path, corpus, monkeypatch):
    calls = interrupt_second_call(monkeypatch, MotionStage)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, corpus, "work")
    assert not (tmp_path / "work" / "manifests" / "motion.parquet").exists()
    calls.clear()
    summaries = run(tmp_path, corpus, "work")
    assert len(calls) == 2, "the video finished before the interruption must not be scored again"
    assert [(s.stage, s.action) for s in summaries] == [("motion", "ran"), ("filter", "ran")]
    monkeypatch.undo()
    run(tmp_path, corpus, "fresh")
    resumed = read_manifest(tmp_path / "work" / "manifests" / "filter.parquet")
    fresh = read_manifest(tmp_path / "fresh" / "manifests" / "filter.parquet")
    for column in ("clip_id", "motion_score", "keep", "drop_reason"):
        assert resumed.column(column).to_pylist() == fresh.column(column).to_pylist()


def test_interrupted_cuts_pass_resumes_and_scores_motion_in_the_same_decode(tmp_path, videos, monkeypatch):
    calls = interrupt_second_call(monkeypatch, CutsMotionStage)
    motion_reads = []
    monkeypatch.setattr(MotionStage, "process", lambda self, payload: motion_reads.append(payload))
    with pytest.raises(KeyboardInterrupt):
        run_with_cuts(tmp_path, videos, "work")
    assert not (tmp_path / "work" / "manifests" / "cuts.parquet").exists()
    calls.clear()
    summaries = run_with_cuts(tmp_path, videos, "work")
    assert len(calls) == 2, "the video finished before the interruption must not be decoded again"
    assert motion_reads == [], "motion after cuts must not decode the videos again"
    assert [(s.stage, s.action) for s in summaries] == [("cuts", "ran"), ("motion", "ran"), ("filter", "ran")]
    resumed = read_manifest(tmp_path / "work" / "manifests" / "filter.parquet")
    assert resumed.column("start_frame").to_pylist() == [0, 24] * 3  # cuts found the cut in each video
    assert resumed.column("keep").to_pylist() == [False, True] * 3  # static shots dropped
    # the same manifests as the stages run one after the other
    monkeypatch.undo()
    work = tmp_path / "work" / "manifests"
    run_motion(work / "cuts.parquet", tmp_path / "separate.parquet")
    separate, fused = read_manifest(tmp_path / "separate.parquet"), read_manifest(work / "motion.parquet")
    assert fused.equals(separate)
    untimed = lambda path: [{k: v for k, v in r.items() if k != "time"} for r in manifest_history(path)]  # noqa: E731
    assert untimed(work / "motion.parquet")[:-1] == untimed(tmp_path / "separate.parquet")  # + the recipe's stamp


def test_unchanged_steps_are_skipped_and_changed_settings_rerun(tmp_path, corpus):
    run(tmp_path, corpus, "work")
    again = run(tmp_path, corpus, "work")
    assert [s.action for s in again] == ["skipped", "skipped"]
    assert again[1].kept == 3 and again[0].rows == 6
    changed = run(tmp_path, corpus, "work", ["filter.rules=['motion_score >= 100']"])
    assert [s.action for s in changed] == ["skipped", "ran"]
    assert changed[1].kept == 0
    resolved = (tmp_path / "work" / "recipe.resolved.yaml").read_text()
    assert "motion_score >= 100" in resolved  # the settings actually used are saved beside the output
    rerun = run(tmp_path, corpus, "work", ["motion.margin_frames=1"])
    assert [s.action for s in rerun] == ["ran", "ran"]  # new scores: the filter's input changed


def test_missing_stage_is_refused_before_anything_runs(tmp_path, corpus, monkeypatch):
    monkeypatch.setitem(stages.MODULES, "caption", "svdcli.curate.stages.no_such_stage")
    text = RECIPE.replace("  filter:", "  caption: {}\n  filter:")
    result = CliRunner().invoke(app, ["curate", "run", str(recipe_file(tmp_path, text)), "--manifest", str(corpus),
                                      "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert result.exit_code == 2
    assert "stage 'caption' is not available in this version" in result.output
    assert not (tmp_path / "w" / "manifests" / "motion.parquet").exists()


@pytest.mark.parametrize("text,message", [
    (RECIPE.replace("motion: {}", "motion: {margin: 3}"), "unknown setting"),
    (RECIPE.replace("motion_score >= 0.25", "aesthetic_score >= 5"), "written by stage 'clip'"),
    (RECIPE.replace("  motion: {}\n", "") + "  motion: {}\n", "'filter' must be the last stage"),
    ("stages: [motion]", "'stages' must map"),
    (RECIPE.replace("stages:", "stages:\n  cuts: {min_len: 2}"), "stage 'cuts': unknown setting"),
    (RECIPE.replace("motion_score >= 0.25", "video_path >= 1"), "video_path holds string values, not numbers"),
])
def test_recipe_mistakes_get_clear_errors(tmp_path, corpus, text, message):
    with pytest.raises(RecipeError, match=message):
        plan = load_recipe(recipe_file(tmp_path, text))
        run_recipe(plan, tmp_path / "w", manifest=corpus, opts=RunOptions())


def test_cuts_settings_get_the_same_checks_as_the_cli(tmp_path, corpus):
    text = RECIPE.replace("stages:", "stages:\n  cuts: {min_length: 1.0, max_length: 0.5}")
    with pytest.raises(SvdError, match="max-length 0.5 is below --min-length 1.0"):
        run_recipe(load_recipe(recipe_file(tmp_path, text)), tmp_path / "w", manifest=corpus,
                   opts=RunOptions())
    assert not list((tmp_path / "w").glob("manifests/*.parquet"))


def test_cli_prints_a_line_per_stage_and_writes_the_report(tmp_path, corpus):
    path = recipe_file(tmp_path, RECIPE.replace("report: false", "report: true"))
    args = ["curate", "run", str(path), "--manifest", str(corpus), "--workdir", str(tmp_path / "w"), "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "motion   ran" in first.output and "kept 3" in first.output
    assert (tmp_path / "w" / "report" / "index.html").exists()
    second = CliRunner().invoke(app, args)
    assert "motion   skipped" in second.output and "filter   skipped" in second.output


def counting(monkeypatch, cls) -> list:
    """Record every payload `cls.process` is called with (the stage still runs)."""
    original, calls = cls.process, []

    def process(self, payload):
        calls.append(payload)
        return original(self, payload)

    monkeypatch.setattr(cls, "process", process)
    return calls


@pytest.mark.parametrize("with_cuts", [False, True])
def test_two_ranks_one_after_the_other_equal_a_single_rank_run(tmp_path, corpus, videos, monkeypatch, with_cuts):
    text = RECIPE.replace("report: false", "report: true")
    if with_cuts:  # cuts then motion: the fused pass, shared by video
        text = text.replace("stages:", "stages:\n  cuts: {}")
    start = ["--input", str(videos)] if with_cuts else ["--manifest", str(corpus)]
    args = ["curate", "run", str(recipe_file(tmp_path, text)), *start, "--no-progress", "--world-size", "2"]
    calls = counting(monkeypatch, CutsMotionStage if with_cuts else MotionStage)
    work = tmp_path / "shared" / "manifests"
    first = CliRunner().invoke(app, args + ["--workdir", str(tmp_path / "shared"), "--rank", "0"])
    assert first.exit_code == 0, first.output
    share = "2 videos" if with_cuts else "2/3 tasks"  # rank 0 of 2 has videos 0 and 2
    assert f"partial  {share} done over all ranks" in first.output, first.output
    assert not list(work.glob("*.parquet")), "a rank must not merge or go on while others still work"
    assert not (tmp_path / "shared" / "report").exists()
    rank0 = len(calls)
    second = CliRunner().invoke(app, args + ["--workdir", str(tmp_path / "shared"), "--rank", "1"])
    assert second.exit_code == 0, second.output
    assert (tmp_path / "shared" / "report" / "index.html").exists()
    assert rank0 == 2 and len(calls) == 3 and len({str(c) for c in calls}) == 3  # 3 videos, each once
    monkeypatch.undo()
    single = args[:-2] + ["--workdir", str(tmp_path / "single")]  # without --world-size
    assert CliRunner().invoke(app, single).exit_code == 0
    shared = read_manifest(work / "filter.parquet")
    alone = read_manifest(tmp_path / "single" / "manifests" / "filter.parquet")
    assert shared.num_rows == 6
    for column in ("clip_id", "motion_score", "keep", "drop_reason"):
        assert shared.column(column).to_pylist() == alone.column(column).to_pylist(), column


def test_rank_must_be_below_world_size(tmp_path, corpus):
    result = CliRunner().invoke(app, ["curate", "run", str(recipe_file(tmp_path)), "--manifest", str(corpus),
                                      "--workdir", str(tmp_path / "w"), "--rank", "2", "--world-size", "2"])
    assert result.exit_code == 2 and "--rank 2 must be below --world-size 2" in " ".join(result.output.split())
    assert not (tmp_path / "w").exists()


def test_missing_craft_weights_stop_the_run_before_cuts(tmp_path, videos, monkeypatch):
    from svdcli.weights import find_craft

    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.EasyOCR/model here
    monkeypatch.delenv("SVD_EASYOCR_DIR", raising=False)
    if find_craft(None) is not None:
        pytest.skip("CRAFT weights are installed on this machine")
    text = RECIPE.replace("stages:", "stages:\n  cuts: {}").replace("  filter:", "  text: {detector: craft}\n  filter:")
    result = CliRunner().invoke(app, ["curate", "run", str(recipe_file(tmp_path, text)), "--input", str(videos),
                                      "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert result.exit_code == 2 and "craft_mlt_25k.pth" in result.output
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("kind", [*BAD_MANIFESTS, "no clip_id", "no video_path", "no start_time", "no fps"])
def test_a_broken_starting_manifest_fails_before_anything_runs(tmp_path, corpus, kind):
    if kind.startswith("no "):
        column = kind.removeprefix("no ")
        from svdcli.manifest.io import write_manifest

        path = write_manifest(read_manifest(corpus).drop_columns([column]), tmp_path / "cut.parquet")
        words = [f"--manifest {path} has no column(s) {column}"]
    else:
        path = bad_manifest(kind, corpus, tmp_path)
        words = [path.name, BAD_MANIFESTS[kind]]
    result = CliRunner().invoke(app, ["curate", "run", str(recipe_file(tmp_path)), "--manifest", str(path),
                                      "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert_one_line_error(result, *words)
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("with_cuts,args,words", [
    (True, ["--input", "{tmp}/none"], ["--input {tmp}/none does not exist"]),
    (True, [], ["the recipe starts with 'cuts': pass --input VIDEOS"]),
    (True, ["--input", "{videos}", "--manifest", "{corpus}"], ["--manifest {corpus} would be unused"]),
    (False, [], ["the run starts at 'motion': pass --manifest M"]),
    (False, ["--manifest", "{corpus}", "--input", "{videos}"], ["--input {videos} would be unused"]),
    (False, ["--manifest", "{corpus}", "--skip", "motion", "--skip", "filter"], ["leaves no stage", "to run"]),
    (False, ["--manifest", "{corpus}", "--skip", "cuts"], ["--skip cuts: the recipe has no stage 'cuts'"]),
    (False, ["--manifest", "{corpus}", "--workdir", "{tmp}/recipe.yaml"], ["--workdir {tmp}/recipe.yaml is a file"]),
    (False, ["--manifest", "{corpus}", "--workers", "0"], ["Invalid value for '--workers'"]),
])
def test_bad_run_arguments_fail_before_anything_runs(tmp_path, corpus, videos, with_cuts, args, words):
    text = RECIPE.replace("stages:", "stages:\n  cuts: {}") if with_cuts else RECIPE
    fill = lambda a: a.format(tmp=tmp_path, videos=videos, corpus=corpus)  # noqa: E731
    result = CliRunner().invoke(app, ["curate", "run", str(recipe_file(tmp_path, text)), "--workdir",
                                      str(tmp_path / "w"), "--no-progress", *map(fill, args)])
    assert_one_line_error(result, *map(fill, words))
    assert not (tmp_path / "w").exists()
