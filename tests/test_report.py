"""`svd curate report`: an offline page with the plots, thresholds and thumbnails per group."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from test_motion import clip_rows, write_rows
from typer.testing import CliRunner

from bad_inputs import BAD_MANIFESTS, assert_one_line_error, bad_manifest

from svdcli.cli.main import app
from svdcli.curate.stages.filter import run_filter
from svdcli.curate.stages.motion import run_motion
from svdcli.curate.report import thresholds, write_report
from svdcli.manifest.io import manifest_history, read_manifest

FPS = 24.0
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def filtered(tmp_path_factory) -> Path:
    """Two videos of static and panning shots, scored and filtered; one clip's video is gone."""
    folder = tmp_path_factory.mktemp("report")
    rows = []
    for i in range(2):
        video = folder / f"v{i}.mp4"
        write_video_pair(video, seed=i)
        rows += clip_rows(video, [0, 24, 48], FPS, (160, 96), tag=f"v{i}")
    rows += clip_rows(folder / "deleted.mp4", [0, 24], FPS, (160, 96), tag="gone")
    manifest = write_rows(rows, folder / "m.parquet")
    run_motion(manifest)
    run_filter(manifest, ["motion_score >= 0.25", "motion_score pct>= 25"])
    return manifest


def write_video_pair(path: Path, seed: int) -> None:
    from svdcli.video.synth import Shot, write_video

    write_video(path, [Shot(24, seed=seed), Shot(24, seed=seed + 5, speed=(2.0, 0.0))], size=(160, 96), fps=FPS)


def test_report_has_plots_thumbnails_and_groups(tmp_path, filtered):
    page = write_report(filtered, tmp_path / "r")
    text = page.read_text()
    for plot in ("length", "motion_score", "reasons"):
        png = tmp_path / "r" / "plots" / f"{plot}.png"
        assert f'src="plots/{plot}.png"' in text and png.read_bytes().startswith(PNG)
    for group in ("kept (2 clips", "motion_score &lt; 0.25 (2 clips", "motion_error (1 clips"):
        assert group in text
    thumbs = re.findall(r'src="(thumbs/[^"]+)"', text)
    assert len(thumbs) == 4 and all((tmp_path / "r" / t).stat().st_size > 0 for t in thumbs)
    assert "unreadable" in text  # the clip whose video is gone has a placeholder, not a crash
    assert "http://" not in text and "https://" not in text  # opens offline, from disk


def test_thresholds_come_from_the_filter_record(filtered):
    lines = thresholds(manifest_history(filtered))
    rules = dict(lines["motion_score"])
    assert rules["motion_score >= 0.25"] == 0.25
    # the percentile is drawn at the value it resolved to: the 25th percentile of the scored clips
    table = read_manifest(filtered, columns=["motion_score", "motion_error"]).to_pydict()
    scores = [s for s, e in zip(table["motion_score"], table["motion_error"]) if e is None]
    assert len(scores) == 4
    assert rules["motion_score pct>= 25"] == pytest.approx(np.percentile(np.float64(scores), 25))


def test_thumbnail_caps_and_unfiltered_manifest(tmp_path, filtered):
    from svdcli.manifest.io import write_manifest

    unfiltered = write_manifest(read_manifest(filtered).drop_columns(["keep", "drop_reason"]), tmp_path / "u.parquet")
    page = write_report(unfiltered, tmp_path / "r", per_group=1)
    text = page.read_text()
    assert "not filtered (5 clips, 1 shown)" in text
    assert len(re.findall(r'src="thumbs/', text)) == 1


def test_cli_writes_the_page(tmp_path, filtered):
    ok = CliRunner().invoke(app, ["curate", "report", "-m", str(filtered), "-o", str(tmp_path / "r")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "r" / "index.html").exists()


@pytest.mark.parametrize("kind", [*BAD_MANIFESTS, "no start_time", "no clip_id"])
def test_cli_refuses_a_manifest_it_cannot_report_on(tmp_path, filtered, kind):
    from svdcli.manifest.io import write_manifest

    if kind.startswith("no "):
        column = kind.removeprefix("no ")
        path = write_manifest(read_manifest(filtered).drop_columns([column]), tmp_path / "cut.parquet")
        words = [path.name, f"has no column(s) {column}"]
    else:
        path = bad_manifest(kind, filtered, tmp_path)
        words = [path.name, BAD_MANIFESTS[kind]]
    result = CliRunner().invoke(app, ["curate", "report", "-m", str(path), "-o", str(tmp_path / "r")])
    assert_one_line_error(result, *words)
    assert not (tmp_path / "r").exists()  # nothing written


def test_cli_refuses_a_file_as_the_report_folder(tmp_path, filtered):
    (tmp_path / "r").write_text("not a folder")
    result = CliRunner().invoke(app, ["curate", "report", "-m", str(filtered), "-o", str(tmp_path / "r")])
    assert_one_line_error(result, "is a file", "needs a folder")
