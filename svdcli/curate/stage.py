"""What a curation stage is: one task in, manifest rows out. Workers, files and resume are the runner's.

A stage (`Stage`) turns one *task* (a video for cuts, the clips of one video for the scoring
stages) into rows, dicts keyed by its `columns`. It says what changes its output (`settings()`,
which feeds the fingerprint of its part folder), loads what it needs once per worker
(`setup()`), and how a task that raised is recorded (`error_rows`). A stage object pickles as
its settings (the attributes it names in `loaded`, its models, are left out), so an executor can
ship it to each worker and call `setup()` there; `resources()` says what one worker needs, for executors that
place workers on a cluster. `ClipStage` is the base of the per-clip scoring stages
(`per_clip.py` runs them over a manifest).

A stage module also declares a `StageSpec`: its manifest columns, its settings and their
bounds, where it may sit in a recipe, how a recipe runs it, its report histograms and shard
scores. The registry (`stages/__init__.py`) lists the modules; nothing else names a stage.
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any, Callable

from svdcli.errors import SvdError
from svdcli.manifest.schema import CLIP_LOCATION, Column


@dataclass(frozen=True)
class Task:
    """One unit of work: `key` is unique and stable across runs; `payload` must pickle."""

    key: str
    payload: Any


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks for. The local executor starts `workers` processes and
    reads none of it; an executor that places workers on machines reserves it per worker."""

    cpus: float = 1.0
    gpus: float = 0.0  # a device 'cuda...' asks for one; 'auto' reserves none and uses a GPU it finds
    loads_model: bool = False  # setup() loads weights: keep each worker for many tasks


def gpus_for(device: str) -> float:
    """The GPUs a worker running on `device` reserves."""
    return 1.0 if str(device).startswith("cuda") else 0.0


class Stage:
    """Base class for a curation stage. Subclasses set `name`/`columns` and implement `process`."""

    name: str = "stage"
    columns: tuple[str, ...] = ()  # the keys of its rows; their types are the manifest schema's
    unit: str = "videos"  # what a task is, for the progress bar
    row_unit: str = "rows"  # what a row is, for the progress bar
    loaded: tuple[str, ...] = ()  # attributes setup() fills (models): left out when the stage pickles
    throughput: tuple[str, str] | None = None  # (numeric column, unit) the runner sums for a rate, e.g. tokens/s

    def __getstate__(self) -> dict:
        """The stage as an executor ships it to a worker: its settings, not its loaded models."""
        return {**self.__dict__, **{name: None for name in self.loaded}}

    def settings(self) -> dict:
        """Everything that changes the stage's output; it feeds the fingerprint."""
        return {}

    def resources(self) -> Resources:
        return Resources()

    def setup(self) -> None:
        """Called once per worker process before any task (load models here)."""

    def process(self, payload: Any) -> list[dict]:
        """Turn one task into rows (dicts keyed by column names)."""
        raise NotImplementedError

    def error_rows(self, payload: Any, message: str) -> list[dict]:
        """Rows recording that the whole task failed with `message`."""
        raise NotImplementedError

    def is_error(self, row: dict) -> bool:
        return bool(row.get("error") or row.get(f"{self.name}_error"))

    def fingerprint(self) -> str:
        blob = json.dumps({"stage": self.name, "settings": self.settings()}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


class ClipStage(Stage):
    """A stage whose task is a group of clips of one video; errors are per clip.

    `process(payload)` gets `{"video_path": str, "clips": [row dicts]}` and returns one dict per
    clip with `clip_id` and the stage's columns.
    """

    unit = "videos"
    needs: tuple[str, ...] = CLIP_LOCATION  # manifest columns `process` reads; checked before any work
    reads_if_present: tuple[str, ...] = ("status",)  # read when there; their type is checked too
    carries: tuple[str, ...] = ()  # more manifest columns each clip's row brings to `process`, when present

    def error_rows(self, payload: dict, message: str) -> list[dict]:
        return [{"clip_id": c["clip_id"], f"{self.name}_error": message} for c in payload["clips"]]


def config_from(cls, settings: dict, stage: str):
    """A stage config from recipe / CLI settings; an unknown name is a user error listing the known ones."""
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise SvdError(f"unknown {stage} setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return cls(**settings)


class SettingError(SvdError):
    """A setting a stage's own check refuses; the message names the setting (`filter.rules ...`)."""


@dataclass(frozen=True)
class StageSpec:
    """What a stage declares about itself, in its module as `SPEC`; the registry collects them.

    `config` is the dataclass (or the builder function) whose fields (parameters) are the
    stage's recipe settings: their names, types and defaults; made with
    `svdcli.curate.settings.setting`, also their bounds and command-line options. A per-clip
    stage gives `runner`, `run_x(manifest, out, *, workers, progress, rank, world_size,
    executor, **settings) -> (RunResult, written path or None)`, which `svd curate STAGE` and
    the recipe both call; `run` (the recipe step) is built from it. `run(input, out, settings,
    options)` runs this rank's share and returns None once the stage's manifest is written,
    else how far all ranks together are (e.g. '2/3 tasks'). The checks raise SvdError; a
    SettingError names the setting itself.
    """

    name: str
    columns: tuple[Column, ...]  # the manifest columns it adds, with their types and meaning
    config: Callable
    run: Callable | None = None  # the recipe step; built from `runner` when not given
    runner: Callable | None = None  # a per-clip stage's run over a manifest (command and recipe)
    summary: Callable | None = None  # (written manifest, **summary options) -> the command's last line
    summary_options: type | None = None  # settings dataclass of the options only the summary reads
    stage: type | None = None  # a per-clip stage's class (ClipStage)
    help: str = ""  # `svd curate NAME --help` where no command module gives one (default: the class docstring)
    bounds: tuple[str, ...] | None = None  # ranges of its numeric settings (filter rule grammar); default: config's
    unbounded: tuple[str, ...] = ()  # numeric settings that take any value
    check: Callable[[dict], None] | None = None  # its own checks of a complete set of settings
    check_setting: Callable[[str, Any], Any] | None = None  # replaces the type check of one setting
    preflight: Callable[[dict], None] | None = None  # before anything runs: files it will need
    first: str = ""  # why it must be the first stage of a recipe ('' = it need not be)
    last: str = ""  # why it must be the last stage
    after: tuple[tuple[str, str], ...] = ()  # (stage, why) that must come before it when both run
    histograms: tuple[tuple[str, str], ...] = ()  # (column, axis label) the report plots
    scores: tuple[str, ...] = ()  # columns every shard sample carries in its json `scores`

    def __post_init__(self):
        from svdcli.curate.settings import bounds

        if self.bounds is None:
            object.__setattr__(self, "bounds", bounds(self.config))
        if self.run is None:
            if self.runner is None:
                raise ValueError(f"stage {self.name!r} declares neither run nor runner")
            object.__setattr__(self, "run", functools.partial(recipe_step, self.runner))
        strangers = [c.name for c in self.columns if c.stage != self.name]
        if strangers:
            raise ValueError(f"stage {self.name!r} declares columns of another stage: {strangers}")


def recipe_step(runner: Callable, src, out, settings: dict, opts) -> str | None:
    """A per-clip stage's recipe step: None once its manifest is written, else how far all ranks
    are ('2/3 tasks')."""
    result, written = runner(src, out, **opts.stage_kwargs(), **settings)
    return None if written is not None else f"{result.tasks_done}/{result.tasks_total} tasks"
