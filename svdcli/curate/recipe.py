"""Declarative curation recipes (`pipelines/*.yaml`) and `svd curate run`.

A recipe names the stages to run, in order, with their settings (see docs/recipes.md):

    name: lvd-f
    workers: 2
    report: true
    stages:
      cuts: {}
      motion: {margin_frames: 2}
      filter:
        rules: ["motion_score >= 0.25", "aesthetic_score pct>= 25"]

Reading the file and checking every setting is `recipe_load.py`; this module runs the stages,
each as its spec says (`SPEC.run`, see svdcli/curate/stages/), except cuts followed by motion,
which run as one decode.
The run lays out `WORKDIR/manifests/<stage>.parquet` (each stage reads the previous one),
`WORKDIR/recipe.resolved.yaml` (the recipe after overrides) and `WORKDIR/report/`.

Skipping: after a stage finishes, a history record {stage: 'recipe', step, key} is appended to
its output, where `key` hashes the step's settings and its input (the input manifest's bytes, or
the list of video files with sizes and times for cuts). A rerun skips a step whose output's
last record carries the same key; anything else reruns it, and the stage itself resumes from
its part files, so an interrupted run loses at most the unflushed rows of its last stage.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from svdcli.curate import stages as registry
from svdcli.curate.per_clip import recipe_step
from svdcli.curate.recipe_load import Recipe, RecipeError, load_recipe  # noqa: F401 - the API
from svdcli.curate.runner import RunOptions
from svdcli.manifest.schema import CLIP_ON_GRID, COLUMNS


@dataclass
class StepSummary:
    stage: str
    action: str  # 'ran', 'skipped' or 'partial' (this rank's share done, other ranks' not yet)
    rows: int
    errors: int
    seconds: float
    kept: int | None = None
    output: str = ""
    note: str = ""


# --- cuts and motion from one decode ------------------------------------------------------
# Every other stage runs as its spec says (`SPEC.run`): this rank's share, then None when the
# stage is complete (its manifest written), else how far all ranks together are.
def _cuts_with_motion(src: Path, out: Path, settings: dict, motion_settings: dict, opts: RunOptions):
    """Cuts, scoring motion in the same decode: (None or how far, as the other steps return;
    the motion rows for `_write_motion`, None while the stage is incomplete)."""
    from svdcli.curate.stages.cuts import cuts_config
    from svdcli.curate.stages.cuts_motion import run_cuts_motion
    from svdcli.curate.stages.motion import MotionConfig

    summary, rows = run_cuts_motion([src], out, cuts_config(**settings), MotionConfig(**motion_settings),
                                    **opts.stage_kwargs())
    return (None if summary.complete else f"{summary.videos} videos"), rows


def _write_motion(src: Path, out: Path, settings: dict, rows) -> None:
    from svdcli.curate.stages.cuts_motion import write_motion_manifest
    from svdcli.curate.stages.motion import MotionConfig

    write_motion_manifest(src, out, rows, MotionConfig(**settings))


def check_runnable(recipe: Recipe, skip: list[str] = ()) -> list[str]:
    """The stages to run; refuse unavailable stages and filter rules on columns no stage writes."""
    for name in skip:
        if name not in recipe.stages:
            raise RecipeError(f"--skip {name}: the recipe has no stage {name!r}")
    run = [s for s in recipe.stages if s not in skip]
    if not run:
        raise RecipeError(f"--skip {' --skip '.join(skip)} leaves no stage of {recipe.source or 'the recipe'} "
                          "to run")
    missing = [s for s in run if not registry.available(s)]
    if missing:
        raise RecipeError(f"stage {missing[0]!r} is not available in this version; remove it from "
                          f"{recipe.source or 'the recipe'} or pass --skip {missing[0]}")
    if "filter" in run:
        from svdcli.curate.stages.filter import is_numeric, parse_rule

        for rule in map(parse_rule, recipe.stages["filter"]["rules"]):
            if rule.column in COLUMNS and not is_numeric(COLUMNS[rule.column].type):
                raise RecipeError(f"{recipe.source or 'the recipe'}: filter rule '{rule}': {rule.column} holds "
                                  f"{COLUMNS[rule.column].type} values, not numbers; rules compare numeric columns")
            owner = COLUMNS[rule.column].stage if rule.column in COLUMNS else None
            if owner not in (*run, "cuts", None):
                raise RecipeError(f"filter rule '{rule}' needs {rule.column}, written by stage "
                                  f"{owner!r}, which this run does not include; run that stage or "
                                  f"change the rules (--set \"filter.rules=[...]\")")
    for name in run:  # e.g. missing CRAFT weights stop the run now, not after cuts and motion
        preflight = registry.spec(name).preflight
        if preflight:
            preflight(recipe.stages[name])
    return run


# --- fingerprints -------------------------------------------------------------------------
def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _videos_digest(src: Path) -> str:
    """Paths, sizes and modification times of the videos cuts would read (no content read)."""
    from svdcli.curate.stages.cuts import find_videos

    h = hashlib.sha1()
    for video in sorted(find_videos([src])):
        st = Path(video).stat() if Path(video).exists() else None
        h.update(f"{video}|{st and st.st_size}|{st and st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def step_key(stage: str, settings: dict, src: Path) -> str:
    """What decides whether a step must rerun: its settings and its exact input."""
    digest = _videos_digest(src) if stage == "cuts" else _file_digest(src)
    blob = json.dumps({"stage": stage, "settings": settings, "input": digest}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _recorded_key(out: Path) -> str | None:
    from svdcli.manifest.io import manifest_history

    if not out.exists():
        return None
    try:
        history = manifest_history(out)
    except Exception:  # noqa: BLE001 - an unreadable output is simply rerun
        return None
    last = history[-1] if history else {}
    return last.get("key") if last.get("stage") == "recipe" else None


def _stamp(out: Path, stage: str, key: str) -> None:
    """Append the recipe record to the stage's output history (rewrites the manifest once)."""
    from svdcli.manifest.io import manifest_history, read_manifest, write_manifest

    table = read_manifest(out)
    write_manifest(table, out, record={"stage": "recipe", "step": stage, "key": key},
                   history=manifest_history(table))


# --- running ------------------------------------------------------------------------------
def run_recipe(recipe: Recipe, workdir: Path, *, videos: Path | None = None, manifest: Path | None = None,
               skip: list[str] = (), opts: RunOptions = RunOptions(),
               on_step: Callable[[StepSummary], None] | None = None) -> list[StepSummary]:
    """Run the recipe's stages in order under `workdir`, skipping unchanged steps.

    With `opts.world_size` > 1 this rank runs its share of the first stage not done yet; when
    other ranks' tasks remain, it stops there (the last summary's action is 'partial'): nothing
    is merged and no later stage runs on a partial manifest. The rank that completes the stage
    merges it and runs the remaining stages whole, as a rerun without a rank would.
    """
    from svdcli.curate.lock import workdir_lock
    from svdcli.outputs import check_writable, writing

    stages = check_runnable(recipe, skip)
    src = _first_input(stages, videos, manifest)
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise RecipeError(f"--workdir {workdir} is a file; it must be a folder (made if missing)")
    check_writable(workdir, "--workdir")
    with writing(workdir / "manifests"):
        (workdir / "manifests").mkdir(parents=True, exist_ok=True)
    with workdir_lock(workdir, opts.rank, opts.world_size):
        _save_resolved(recipe, workdir / "recipe.resolved.yaml")
        return _run_steps(recipe, stages, src, workdir, opts, on_step)


def _run_steps(recipe: Recipe, stages: list[str], src: Path, workdir: Path, opts: RunOptions,
               on_step: Callable[[StepSummary], None] | None) -> list[StepSummary]:
    from svdcli.curate.outcome import check_outcome, outcome_of

    summaries = []
    motion_rows = None  # motion scored inside the cuts pass, until the motion step writes it
    for i, stage in enumerate(stages):
        out = workdir / "manifests" / f"{stage}.parquet"
        settings = recipe.stages[stage]
        key = step_key(stage, settings, src)
        t0 = time.perf_counter()
        action, note = "skipped", ""
        if _recorded_key(out) != key:
            if stage == "cuts" and stages[i + 1:i + 2] == ["motion"]:
                # motion must rerun on new cuts anyway: score it in the same decode
                pending, motion_rows = _cuts_with_motion(src, out, settings, recipe.stages["motion"], opts)
                note = "motion scored in the same decode"
            elif stage == "motion" and motion_rows is not None:
                pending = _write_motion(src, out, settings, motion_rows)
                note = "scored in the cuts pass"
            else:
                pending = recipe_step(registry.spec(stage), src, out, settings, opts)
            if pending:  # other ranks still work on this stage: later stages must wait for it
                summaries.append(StepSummary(stage, "partial", 0, 0, time.perf_counter() - t0,
                                             note=f"{pending} done over all ranks"))
                if on_step:
                    on_step(summaries[-1])
                return summaries
            _stamp(out, stage, key)
            action = "ran"
            # this rank finished the stage last: the others have stopped, so it runs the rest alone
            opts = opts.alone()
        summary = _summarize(stage, action, out, time.perf_counter() - t0, note)
        summaries.append(summary)
        if on_step:
            on_step(summary)
        # judged after its rows are written and stamped: a rerun skips the stage and judges it again
        check_outcome(outcome_of(stage, out), recipe.max_error_rate, "max_error_rate")
        src = out
    return summaries


def _first_input(stages: list[str], videos: Path | None, manifest: Path | None) -> Path:
    if stages[0] == "cuts":
        if videos is None:
            hint = " (or --skip cuts to start from --manifest)" if manifest is not None else ""
            raise RecipeError(f"the recipe starts with 'cuts': pass --input VIDEOS (a folder or a video file){hint}")
        if manifest is not None:
            raise RecipeError(f"--manifest {manifest} would be unused: the run starts with cuts, from --input "
                              "(pass --skip cuts to start from the manifest)")
        if not Path(videos).exists():
            raise RecipeError(f"--input {videos} does not exist")
        return Path(videos)
    if manifest is None:
        raise RecipeError(f"the run starts at {stages[0]!r}: pass --manifest M (a manifest from `svd curate cuts`)")
    if videos is not None:
        raise RecipeError(f"--input {videos} would be unused: only the cuts stage reads videos, and this run "
                          f"starts at {stages[0]!r} from --manifest")
    import pyarrow.parquet as pq

    from svdcli.manifest.io import read_manifest

    read_manifest(manifest, columns=[])  # a clear error now rather than inside a stage
    needed = ["clip_id"] if stages[0] == "filter" else CLIP_ON_GRID
    missing = [c for c in needed if c not in pq.read_schema(manifest).names]
    if missing:  # else every clip would become an error row
        raise RecipeError(f"--manifest {manifest} has no column(s) {', '.join(missing)}; the {stages[0]} "
                          "stage reads the clip columns `svd curate cuts` writes")
    return Path(manifest)


def _save_resolved(recipe: Recipe, path: Path) -> None:
    """The recipe after overrides, beside the manifests (written aside and renamed: a full disk
    leaves the previous one whole)."""
    import os
    import uuid

    import yaml

    from svdcli.outputs import writing

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with writing(path):
            tmp.write_text(yaml.safe_dump(asdict(recipe), sort_keys=False))
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _summarize(stage: str, action: str, out: Path, seconds: float, note: str = "") -> StepSummary:
    from svdcli.manifest.io import read_manifest

    table = read_manifest(out)
    if stage == "cuts":  # short pieces are no errors
        errors = sum(s == "error" for s in table.column("status").to_pylist())
    elif f"{stage}_error" in table.column_names:
        column = table.column(f"{stage}_error")
        errors = len(column) - column.null_count
    else:
        errors = 0
    kept = sum(bool(k) for k in table.column("keep").to_pylist()) if stage == "filter" else None
    return StepSummary(stage, action, table.num_rows, errors, seconds, kept, str(out), note)
