"""Running a per-clip scoring stage over a manifest: tasks grouped by video, columns merged back.

Used by motion, text, clip and caption (`ClipStage`s). A task is the ok clips of one video (at
most `clips_per_task`), so a worker opens each video once and can batch its clips. Before any
work, `check_inputs` refuses a manifest without the columns the stage reads (`ClipStage.needs`);
when every task is done, the stage's columns are merged into the manifest by `clip_id`.

A declared stage (`StageSpec(stage=...)`) needs nothing more: `runner_of` runs it over a
manifest from its settings, `recipe_step` is its step in `svd curate run`, and `summary_line`
the last line of its command, unless the spec gives its own.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from svdcli.curate.parts import TASK_COLUMN, clean_parts
from svdcli.curate.runner import RunResult, run_stage
from svdcli.curate.stage import ClipStage, StageSpec, Task, config_from
from svdcli.errors import SvdError
from svdcli.manifest.io import (ManifestError, has_status, manifest_history, put_column, read_manifest,
                                write_manifest)
from svdcli.manifest.schema import CLIP_TASK_FIELDS, COLUMNS


def clip_tasks(table: pa.Table, clips_per_task: int = 64, carry: tuple[str, ...] = ()) -> list[Task]:
    """Group the ok clips of `table` by video into tasks with stable keys; each clip's row holds
    the clip fields and the `carry` columns the table has."""
    ok = table.filter(has_status(table, "ok")) if "status" in table.column_names else table
    fields = [f for f in [*CLIP_TASK_FIELDS, *carry] if f in ok.column_names]
    by_video: dict[str, list[dict]] = {}
    for row in ok.select(fields).to_pylist():
        by_video.setdefault(row["video_path"], []).append(row)
    tasks = []
    for video, clips in by_video.items():
        clips.sort(key=lambda c: c["start_time"])
        for i in range(0, len(clips), clips_per_task):
            group = clips[i:i + clips_per_task]
            key = hashlib.sha1("|".join(c["clip_id"] for c in group).encode()).hexdigest()[:16]
            tasks.append(Task(key, {"video_path": video, "clips": group}))
    return tasks


def merge_columns(manifest: pa.Table, results: pa.Table, columns: list[str]) -> pa.Table:
    """Replace/add `columns` in `manifest` from `results`, matched by clip_id (others null)."""
    index = {cid: i for i, cid in enumerate(results.column("clip_id").to_pylist())}
    take = pa.array([index.get(cid) for cid in manifest.column("clip_id").to_pylist()], type=pa.int64())
    out = manifest
    for name in columns:
        out = put_column(out, name, results.column(name).take(take))
    return out


def run_clip_stage(stage: ClipStage, manifest_path: Path, out_path: Path | None = None, *,
                   clips_per_task: int = 64, **run_kwargs) -> tuple[RunResult, Path | None]:
    """Score every ok clip of a manifest and write the manifest with the stage's columns.

    Returns the run result and the written path (None when only part of a sharded run is done).
    """
    manifest_path = Path(manifest_path)
    out_path = Path(out_path or manifest_path)
    check_inputs(stage, manifest_path, out_path)
    try:
        manifest = read_manifest(manifest_path)
    except (pa.ArrowException, OSError) as exc:  # a damaged body behind a readable footer
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ManifestError(f"{manifest_path} cannot be read: {first}") from exc
    tasks = clip_tasks(manifest, clips_per_task, stage.carries)
    result = run_stage(stage, tasks, out_path, **run_kwargs)
    if not result.complete:
        return result, None
    write_scored_manifest(stage, manifest, manifest_path, result.tables[0].drop_columns([TASK_COLUMN]), out_path)
    clean_parts(out_path, stage)
    return result, out_path


def check_inputs(stage: ClipStage | type[ClipStage], manifest_path: Path, out_path: Path) -> None:
    """Refuse, before any work, a manifest without the columns `stage` reads (or holding them in
    another type) and an output path that is a folder; one line naming the file and the fault."""
    schema = _schema(manifest_path)
    missing = [c for c in stage.needs if c not in schema.names]
    if missing:
        raise ManifestError(f"{manifest_path} lacks column(s) {', '.join(missing)}, which `svd curate {stage.name}` "
                            f"reads (a manifest from `svd curate cuts` has them)")
    for name in [*stage.needs, *(c for c in stage.reads_if_present if c in schema.names)]:
        have, want = schema.field(name).type, COLUMNS[name].type
        if _kind(have) != _kind(want):
            raise ManifestError(f"{manifest_path}: column {name} is {have}, `svd curate {stage.name}` needs {want}")
    if Path(out_path).is_dir():
        raise SvdError(f"--out {out_path} is a folder; give the path of the manifest to write")


def _schema(path: Path) -> pa.Schema:
    read_manifest(path, columns=[])  # exists, is Parquet, is a manifest this version reads
    return pq.read_schema(path)


def _kind(t: pa.DataType) -> str:
    """What a stage can use a column as: text, a number (any int or float width), or the type itself."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    return str(t)


def write_scored_manifest(stage: ClipStage, manifest: pa.Table, manifest_path: Path, results: pa.Table,
                          out_path: Path) -> None:
    """`manifest` (read from `manifest_path`) with the stage's columns from `results` (by clip_id),
    written to `out_path` with the stage's history record."""
    merged = merge_columns(manifest, results, [c for c in stage.columns if c != "clip_id"])
    record = {"stage": stage.name, "settings": stage.settings(), "fingerprint": stage.fingerprint(),
              "input": str(manifest_path)}
    write_manifest(merged, out_path, record=record, history=manifest_history(manifest))


def runner_of(spec: StageSpec):
    """How a per-clip stage runs over a manifest (`svd curate STAGE` and the recipe): its own
    `runner`, else its declared class built from the settings."""
    if spec.runner is not None:
        return spec.runner

    def run(manifest_path, out_path=None, **kwargs) -> tuple[RunResult, Path | None]:
        run_kwargs = {k: kwargs.pop(k) for k in RUN_KEYS if k in kwargs}
        stage = spec.stage(config_from(spec.config, kwargs, spec.name))
        return run_clip_stage(stage, manifest_path, out_path, clips_per_task=stage.clips_per_task, **run_kwargs)

    return run


RUN_KEYS = ("workers", "progress", "rank", "world_size", "executor")  # RunOptions.stage_kwargs()


def recipe_step(spec: StageSpec, src: Path, out: Path, settings: dict, opts) -> str | None:
    """A stage's step in a recipe: None once its manifest is written, else how far all ranks
    are ('2/3 tasks')."""
    if spec.run is not None:
        return spec.run(src, out, settings, opts)
    result, written = runner_of(spec)(src, out, **opts.stage_kwargs(), **settings)
    return None if written is not None else f"{result.tasks_done}/{result.tasks_total} tasks"


def summary_line(spec: StageSpec, path: Path, **summary_options) -> str:
    """The last line of `svd curate STAGE`: the stage's own summary, else clips scored and errors."""
    if spec.summary is not None:
        return spec.summary(path, **summary_options)
    error = f"{spec.name}_error"
    scores = [c.name for c in spec.columns if c.name != error]
    table = read_manifest(path, columns=[*scores[:1], error])
    counts = [len(table.column(n)) - table.column(n).null_count for n in table.column_names]
    return f"{spec.name}: {counts[0] if scores else 0} clips scored, {counts[-1]} errors -> {path}"
