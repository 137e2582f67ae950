"""A per-clip stage is its declaration: a toy stage written here, plus one registry call, gets its
`svd curate` command, its recipe step, settings checks, manifest columns and filter errors."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from clip_rows import clip_rows
from svdcli.cli.main import app
from svdcli.curate import stages
from svdcli.curate.settings import setting
from svdcli.curate.stage import ClipStage, Frames, StageSpec
from svdcli.manifest.io import manifest_history, read_manifest, table_from_rows, write_manifest
from svdcli.manifest.schema import COLUMNS as CATALOGUE, Column
from svdcli.video.synth import Shot, write_video


# --- the whole toy stage: settings, columns, scorer, declaration ----------------------------------
@dataclass
class BrightnessSettings:
    gain: float = setting(1.0, "Multiply the mean brightness by this.", gt=0)


COLUMNS = (
    Column("brightness", pa.float32(), "brightness", "mean RGB value (0..255) of the first, middle and last "
           "frame, times the gain"),
    Column("brightness_error", pa.string(), "brightness", "error message when the frames could not be read"),
)


class Brightness(ClipStage):
    """Score the mean brightness of every ok clip."""

    frames = Frames("fml", long_side=64)

    def score(self, frames: np.ndarray) -> dict:
        return {"brightness": float(frames.mean()) * self.config.gain}


SPEC = StageSpec(name="brightness", columns=COLUMNS, config=BrightnessSettings, stage=Brightness,
                 histograms=(("brightness", "mean brightness"),), scores=("brightness",))
# -------------------------------------------------------------------------------------------------

FPS = 12.0
DIM = 0.3  # the dark shot's brightness, relative to the bright one


@pytest.fixture
def registered():
    stages.register(SPEC)
    yield
    stages.unregister("brightness")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A bright clip, the same picture dimmed, and a clip of a missing video."""
    tmp = tmp_path_factory.mktemp("brightness")
    video = tmp / "v.mp4"
    write_video(video, [Shot(24, seed=3), Shot(24, seed=3, brightness=DIM)], size=(160, 96), fps=FPS)
    rows = clip_rows(video, [(0, 24), (24, 48)], FPS, (160, 96)) + clip_rows(tmp / "missing.mp4", [(0, 24)], FPS, (160, 96))
    return write_manifest(table_from_rows(rows, list(rows[0])), tmp / "clips.parquet")


def scores(path) -> list:
    table = read_manifest(path)
    return list(zip(table.column("brightness").to_pylist(), table.column("brightness_error").to_pylist()))


def test_the_command_is_built_from_the_declaration(registered, manifest, tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["curate", "--help"])
    assert "brightness" in listed.output and "Score the mean brightness" in listed.output

    out = tmp_path / "out.parquet"
    result = runner.invoke(app, ["curate", "brightness", "-m", str(manifest), "-o", str(out), "--gain", "2",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"brightness: 2 clips scored, 1 errors ->" in result.output
    (bright, e1), (dark, e2), (missing, error) = scores(out)
    assert e1 is None and e2 is None and missing is None and "missing.mp4" in error
    assert 2 * 40 < bright < 2 * 255 and dark / bright == pytest.approx(DIM, abs=0.03)
    assert read_manifest(out).schema.field("brightness").type == pa.float32()  # the declared type
    assert manifest_history(read_manifest(out))[-1]["settings"] == {"gain": 2.0}

    refused = runner.invoke(app, ["curate", "brightness", "-m", str(manifest), "--gain", "0"])
    assert refused.exit_code == 2 and "--gain" in refused.output and "0 is not above 0" in refused.output


def test_the_recipe_runs_checks_and_filters_it(registered, manifest, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: toy\nreport: false\nstages:\n  brightness: {gain: 1.0}\n"
                      "  filter: {rules: ['brightness >= 40']}\n")
    runner = CliRunner()
    bad = runner.invoke(app, ["curate", "run", str(recipe), "-m", str(manifest), "-w", str(tmp_path / "w"),
                              "--set", "brightness.gain=0"])
    assert bad.exit_code == 2 and "brightness.gain = 0 is out of range: it must be > 0" in bad.output

    ran = runner.invoke(app, ["curate", "run", str(recipe), "-m", str(manifest), "-w", str(tmp_path / "w"),
                              "--no-progress"])
    assert ran.exit_code == 0, ran.output
    kept = read_manifest(tmp_path / "w" / "manifests" / "filter.parquet")
    reasons = kept.column("drop_reason").to_pylist()
    assert reasons[0] is None and reasons[1].startswith("brightness") and reasons[2] == "brightness_error"
    bright, dark = (s for s, _ in scores(tmp_path / "w" / "manifests" / "brightness.parquet")[:2])
    assert dark / bright == pytest.approx(DIM, abs=0.03)


def test_unregistering_removes_its_columns(manifest):
    stages.register(SPEC)
    assert "brightness" in CATALOGUE and stages.spec("brightness") is SPEC
    stages.unregister("brightness")
    assert "brightness" not in stages.NAMES and "brightness" not in CATALOGUE
