"""Recipe loading checks every setting before any stage runs: names, types, ranges, top-level keys, --set."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import click
import pytest
import typer
from bad_inputs import assert_one_line_error
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.curate.stages import caption, clip, cuts, motion, text
from svdcli.curate.stages.filter import parse_rule
from svdcli.curate.recipe import RecipeError, load_recipe
from svdcli.curate import stages
from svdcli.curate.recipe_load import setting_types

REPO = Path(__file__).resolve().parents[1]
RECIPE = """\
name: small
report: false
stages:
  motion: {}
  text: {detector: dbnet}
  filter:
    rules: ["motion_score >= 0.25"]
"""
# the settings of each stage as its own code defines them (independent of recipe_settings)
DEFAULTS = {
    "cuts": {k: p.default for k, p in inspect.signature(cuts.cuts_config).parameters.items()},
    "motion": dataclasses.asdict(motion.MotionConfig()),
    "text": dataclasses.asdict(text.TextConfig()),
    "clip": dataclasses.asdict(clip.ClipConfig()),
    "caption": dataclasses.asdict(caption.CaptionConfig()),
}


def run_cli(tmp_path: Path, recipe: str = RECIPE, *overrides: str, manifest: Path | None = None):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe)
    manifest = manifest or tmp_path / "clips.parquet"
    args = ["curate", "run", str(path), "--manifest", str(manifest), "--workdir", str(tmp_path / "work"),
            "--no-progress"]
    return CliRunner().invoke(app, args + [a for o in overrides for a in ("--set", o)]), path


@pytest.mark.parametrize("override,words", [
    ("text.size=abc", ["--set 'text.size=abc'", "text.size must be an integer, not 'abc'"]),
    ("motion.margin_frames=abc", ["motion.margin_frames must be an integer, not 'abc'"]),
    ("text.batch_size=-5", ["text.batch_size = -5 is out of range: it must be >= 0"]),
    ("text.size=[1, 2", ["--set 'text.size=[1, 2'", "is not a YAML value"]),
    ("motion.margin=2", ["stage 'motion': unknown setting 'margin'", "margin_frames"]),
    ("text.frames=2fpx", ["'fml'", "'2fpx'"]),
    ("text.device=gpu", ["text.device must be auto, cpu, cuda or cuda:N, not 'gpu'"]),
    ("filter.rules=motion_score >= 0.25", ["filter.rules must be a non-empty list of rule strings"]),
    ("filter.rules=['motion_score >> 1']", ["cannot parse rule"]),
    ("workers=two", ["'workers' must be an integer >= 1, not 'two'"]),
    ("workers=0", ["'workers' must be an integer >= 1, not 0"]),
    ("report=maybe", ["'report' must be true or false"]),
    ("motion", ["expected STAGE.SETTING=VALUE"]),
    ("clip.batch_size=8", ["the recipe has no stage 'clip'"]),
    ("executor=spark", ["'executor' must be local or ray, not 'spark'"]),
])
def test_bad_overrides_fail_before_anything_runs(tmp_path, override, words):
    result, _ = run_cli(tmp_path, RECIPE, override)  # no manifest either: the settings are refused first
    assert_one_line_error(result, *words)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("recipe,words", [
    ("- motion\n- filter\n", ["a recipe maps name, workers, report, stages", "not a list"]),
    ("", ["it is empty"]),
    ("stages: {motion: {}\n", ["is not valid YAML"]),
    (RECIPE.replace("report: false", "workers: two"), ["'workers' must be an integer >= 1, not 'two'"]),
    (RECIPE.replace("report: false", "report: 'no'"), ["'report' must be true or false, not 'no'"]),
    (RECIPE.replace("name: small", "name: [a, b]"), ["'name' must be a name"]),
    (RECIPE.replace("name: small", "nmae: small"), ["unknown top-level keys ['nmae']"]),
    (RECIPE.replace("motion: {}", "motion: fast"), ["stage 'motion' must map its settings to values", "'fast'"]),
    (RECIPE.replace("motion: {}", "motion: [2]"), ["stage 'motion' must map its settings"]),
    (RECIPE.replace("motion: {}", "moton: {}"), ["unknown stage 'moton'"]),
    (RECIPE.replace("motion: {}", "motion: {interval: 0}"), ["motion.interval = 0 is out of range: it must be > 0"]),
    (RECIPE.replace("motion: {}", "motion: {pyr_scale: 1.0}"), ["motion.pyr_scale = 1.0", "< 1"]),
    (RECIPE.replace("motion: {}", "motion: {levels: true}"), ["motion.levels must be an integer, not True"]),
    (RECIPE.replace("motion: {}", "motion: {poly_sigma: fast}"), ["motion.poly_sigma must be a number"]),
    (RECIPE.replace("{detector: dbnet}", "{detector: tesseract}"), ["detector must be one of auto, craft, dbnet"]),
    (RECIPE.replace("{detector: dbnet}", "{size: 32}"), ["text.size = 32 is out of range: it must be >= 64"]),
    (RECIPE.replace("{detector: dbnet}", "{model_dir: [a]}"), ["text.model_dir must be a string or null"]),
    (RECIPE.replace("stages:", "stages:\n  caption: {seq_len: 5, min_seq_len: 5}"),
     ["stage 'caption'", "--seq-len (5) must be larger than --min-seq-len (5)"]),
    (RECIPE.replace("stages:", "stages:\n  caption: {top_p: 1.5}"), ["caption.top_p = 1.5", "<= 1"]),
    (RECIPE.replace("stages:", "stages:\n  clip: {batch_size: 0}"), ["clip.batch_size = 0", ">= 1"]),
    (RECIPE.replace("stages:", "stages:\n  caption: {device: 'cuda:x'}"), ["caption.device must be auto, cpu"]),
    (RECIPE.replace("stages:", "stages:\n  cuts: {levels: [8]}"), ["cuts.levels must be a string, not [8]"]),
    (RECIPE.replace("motion: {}", "motion: {interval: 1e-x}"), ["motion.interval must be a number, not '1e-x'"]),
    (RECIPE.replace("stages:", "stages:\n  cuts: {levels: 'native,fast'}"), ["'fast' is not 'native' or a rate"]),
    (RECIPE.replace("stages:", "stages:\n  cuts: {trim: -1}"), ["cuts.trim = -1 is out of range"]),
    (RECIPE.replace("stages:", "stages:\n  cuts: {thresholds: [20, 8]}"), ["cuts.thresholds must be a string or null"]),
    (RECIPE.replace('rules: ["motion_score >= 0.25"]', "rules: []"), ["filter.rules must be a non-empty list"]),
    (RECIPE.replace("report: false", "executor: slurm"), ["'executor' must be local or ray, not 'slurm'"]),
    (RECIPE.replace("report: false", "resources: {moton: {num_cpus: 1}}"), ["resources for unknown stage 'moton'"]),
    (RECIPE.replace("report: false", "resources: {text: {cpus: 1}}"), ["resources.text must map num_cpus"]),
    (RECIPE.replace("report: false", "resources: {text: {num_gpus: -1}}"), ["resources.text.num_gpus must be a number >= 0"]),
    (RECIPE.replace("report: false", "resources: {text: {num_cpus: 0}}"), ["resources.text.num_cpus must be a number > 0"]),
    (RECIPE.replace("report: false", "resources: [text]"), ["'resources' must be a mapping of stage names"]),
    (RECIPE.replace('rules: ["motion_score >= 0.25"]', "rules: [0.25]"), ["filter.rules must be a non-empty list"]),
    (RECIPE.replace('rules: ["motion_score >= 0.25"]', "rules: ['motion_score >= 1']\n    keep_top: 3"),
     ["stage 'filter': unknown setting 'keep_top'"]),
])
def test_bad_recipes_fail_naming_the_file_before_anything_runs(tmp_path, recipe, words):
    result, path = run_cli(tmp_path, recipe)
    assert_one_line_error(result, path.name, *words)
    assert not (tmp_path / "work").exists()


def test_executor_keys_are_read_and_reach_the_executor(tmp_path, monkeypatch):
    """`executor`, `ray_address` and `resources` from the recipe (and --set) are what the run's
    executor is built with; --executor on the command line wins."""
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.replace("report: false", "executor: ray\nray_address: 10.0.0.1:6379\n"
                                   "resources: {text: {num_cpus: 2, num_gpus: 0.5}}"))
    recipe = load_recipe(path)
    assert (recipe.executor, recipe.ray_address) == ("ray", "10.0.0.1:6379")
    assert recipe.resources == {"text": {"num_cpus": 2.0, "num_gpus": 0.5}}
    assert load_recipe(path, ["executor=local"]).executor == "local"
    built = []
    from svdcli.curate import executors

    monkeypatch.setattr(executors, "executor_for", lambda *a: built.append(a) or None)
    monkeypatch.setattr("svdcli.curate.recipe.run_recipe", lambda *a, **k: [])
    CliRunner().invoke(app, ["curate", "run", str(path), "--manifest", str(path), "--workdir", str(tmp_path / "w")])
    CliRunner().invoke(app, ["curate", "run", str(path), "--manifest", str(path), "--workdir", str(tmp_path / "w"),
                             "--executor", "local"])
    assert built == [("ray", "10.0.0.1:6379", recipe.resources), ("local", "10.0.0.1:6379", recipe.resources)]


def test_a_missing_or_unreadable_recipe_file_is_one_line(tmp_path):
    path = tmp_path / "recipe.yaml"
    missing = CliRunner().invoke(app, ["curate", "run", str(tmp_path / "none.yaml"), "-w", str(tmp_path / "w")])
    assert_one_line_error(missing, "recipe not found", "none.yaml")
    path.write_bytes(b"\xff\xfe\x00binary")
    binary = CliRunner().invoke(app, ["curate", "run", str(path), "-w", str(tmp_path / "w")])
    assert_one_line_error(binary, "recipe.yaml is not valid YAML")


def test_every_default_is_accepted_and_overrides_apply(tmp_path):
    import yaml

    stages = {s: dict(DEFAULTS[s]) for s in ("cuts", "motion", "text", "caption", "clip")}  # run order
    stages["text"]["detector"] = "dbnet"
    stages["filter"] = {"rules": ["motion_score >= 0.25"]}
    path = tmp_path / "all.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    recipe = load_recipe(path, ["motion.margin_frames=3", "workers=4", "report=false", "caption.top_p=1",
                                "clip.device=cuda:1", "text.device=cpu"])
    assert recipe.stages["motion"]["margin_frames"] == 3 and recipe.workers == 4 and recipe.report is False
    # what YAML 1.1 reads otherwise than meant: '1e-1' is a string to PyYAML, 8 is no string
    assert load_recipe(path, ["motion.interval=1e-1"]).stages["motion"]["interval"] == 0.1
    assert load_recipe(path, ["cuts.levels=8"]).stages["cuts"]["levels"] == "8"
    for name in ("lvd-f.yaml", "demo/curate.yaml"):  # the shipped recipes load as written
        load_recipe(REPO / "pipelines" / name)


def test_settings_are_the_stages_own():
    for stage, defaults in DEFAULTS.items():
        assert list(setting_types(stage)) == list(defaults), stage


def spec_defaults(spec) -> dict:
    """A registered stage's settings and defaults: its config dataclass, or its builder's parameters."""
    if dataclasses.is_dataclass(spec.config):
        return dataclasses.asdict(spec.config())
    return {k: p.default for k, p in inspect.signature(spec.config).parameters.items()}


def test_every_numeric_setting_has_a_bound_and_every_bound_a_setting():
    for spec in stages.specs():  # every registered stage, a new one too
        bounded = {parse_rule(b).column for b in spec.bounds} | set(spec.unbounded)
        numeric = {k for k, v in spec_defaults(spec).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert numeric == bounded, spec.name
    assert {s.name for s in stages.specs()} >= set(DEFAULTS)


def option_bounds(option) -> tuple:
    """(min, max) of a command option: click keeps them on its range type (IntRange, FloatRange)."""
    return getattr(option.type, "min", None), getattr(option.type, "max", None)


def test_bounds_agree_with_the_stage_commands_options():
    curate = typer.main.get_command(app).commands["curate"]
    ctx = click.Context(curate)
    commands = {name: curate.resolve_command(ctx, [name])[1] for name in curate.list_commands(ctx)}  # some built then
    compared = 0
    for spec in stages.specs():
        stage, parsed = spec.name, [parse_rule(r) for r in spec.bounds]
        if stage not in commands:  # a stage without a command of its own
            continue
        for option in commands[stage].params:
            if option.name not in setting_types(stage):
                continue
            lows = [r.value for r in parsed if r.column == option.name and r.op.startswith(">")]
            highs = [r.value for r in parsed if r.column == option.name and r.op.startswith("<")]
            low, high = option_bounds(option)
            assert low == (lows[0] if lows else None), (stage, option.name)
            assert high == (highs[0] if highs else None), (stage, option.name)
            compared += 1
    assert compared >= 15


def test_api_errors_are_recipe_errors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(RECIPE)
    with pytest.raises(RecipeError, match="text.size must be an integer"):
        load_recipe(path, ["text.size=abc"])
