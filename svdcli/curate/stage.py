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

import hashlib
import json
from dataclasses import asdict, dataclass, fields, is_dataclass
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


@dataclass(frozen=True)
class Frames:
    """The frames a per-clip scorer sees: at `times` ('fml' = first, middle, last; or a rate such
    as '1fps', see `svdcli.curate.frames.frame_times`), RGB uint8 with the long side scaled to
    `long_side` px (aspect kept, never upscaled)."""

    times: str = "fml"
    long_side: int = 256


class ClipStage(Stage):
    """A stage whose task is a group of clips of one video; errors are per clip.

    `process(payload)` gets `{"video_path": str, "clips": [row dicts]}` and returns one dict per
    clip with `clip_id` and the stage's columns. A stage that scores frames need not write it:
    it declares `frames` (or `frames_needed()` when its settings choose them) and implements
    `score(frames) -> {column: value}`, a pure function of the (N, H, W, 3) frames of one clip;
    the base reads every clip's frames in one pass per video, and a clip whose frames cannot be
    read gets `<name>_error`, alone.
    """

    unit = "videos"
    needs: tuple[str, ...] = CLIP_LOCATION  # manifest columns `process` reads; checked before any work
    reads_if_present: tuple[str, ...] = ("status",)  # read when there; their type is checked too
    carries: tuple[str, ...] = ()  # more manifest columns each clip's row brings to `process`, when present
    frames: Frames | None = None  # what `score` sees
    clips_per_task: int = 64  # clips of one video per task

    def __init__(self, config: Any = None):
        self.config = config  # its settings dataclass

    def settings(self) -> dict:
        return asdict(self.config) if is_dataclass(self.config) else {}

    def error_rows(self, payload: dict, message: str) -> list[dict]:
        return [{"clip_id": c["clip_id"], f"{self.name}_error": message} for c in payload["clips"]]

    def frames_needed(self) -> Frames:
        if self.frames is None:
            raise NotImplementedError(f"stage {self.name!r}: declare `frames` to score frames, or write `process`")
        return self.frames

    def score(self, frames) -> dict:
        """The stage's columns for one clip from its frames (N, H, W, 3) uint8."""
        raise NotImplementedError

    def process(self, payload: dict) -> list[dict]:
        from svdcli.curate.frames import frame_times, read_clip_frames
        from svdcli.video.seek import analysis_size

        want = self.frames_needed()
        size = lambda c: analysis_size(c["width"], c["height"], want.long_side, upscale=False)  # noqa: E731
        rows = []
        for clip, frames in read_clip_frames(payload, lambda c: frame_times(c, want.times), size):
            if isinstance(frames, Exception):
                rows.append({"clip_id": clip["clip_id"], f"{self.name}_error": f"{type(frames).__name__}: {frames}"})
            else:
                rows.append({"clip_id": clip["clip_id"], **self.score(frames)})
        return rows


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
    `svdcli.curate.settings.setting`, also their bounds and command-line options.

    How it runs: a per-clip stage gives its class (`stage`, a ClipStage built as
    `stage(config)`) and, when it needs more than the base does (side files, inputs read
    first), `runner`: `run_x(manifest, out, *, workers, progress, rank, world_size, executor,
    **settings) -> (RunResult, written path or None)`; `svd curate STAGE` and the recipe both
    call it (`per_clip.runner_of`). Any other stage gives `run(input, out, settings, options)`,
    the recipe step, which runs this rank's share and returns None once the stage's manifest is
    written, else how far all ranks together are (e.g. '2/3 tasks'). The checks raise
    SvdError; a SettingError names the setting itself.
    """

    name: str
    columns: tuple[Column, ...]  # the manifest columns it adds, with their types and meaning
    config: Callable
    run: Callable | None = None  # the recipe step of a stage that is not per clip
    runner: Callable | None = None  # a per-clip stage's own run over a manifest (command and recipe)
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
        if self.run is None and self.runner is None and self.stage is None:
            raise ValueError(f"stage {self.name!r} declares none of run, runner and stage")
        if self.stage is not None:  # its name and row keys are the declaration's
            self.stage.name = self.name
            self.stage.columns = ("clip_id", *(c.name for c in self.columns))
        strangers = [c.name for c in self.columns if c.stage != self.name]
        if strangers:
            raise ValueError(f"stage {self.name!r} declares columns of another stage: {strangers}")

