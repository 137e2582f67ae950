"""The shared runner for curation stages: workers, part files, resume, progress and error rows.

A stage is a small object (see `Stage`) that turns one *task* (a video for `cuts`, the clips of
one video for the scoring stages) into manifest rows. The runner owns everything else:

- tasks are split by (rank, world_size) so several machines can share a run;
- results are buffered in the parent and flushed to atomic Parquet part files under
  `<out>.parts/<stage>-<fingerprint>/` every `flush_rows` rows or `flush_seconds` seconds;
  every row carries its task key in `_task`, so a rerun reads the keys back and skips
  finished tasks: a killed run loses at most one unflushed buffer, never a written part;
- a task that raises becomes error rows (the stage decides their shape), and the run goes on;
- a progress bar shows tasks done, rows written and errors;
- when every task has a part, the parts are merged into the output manifest (atomically)
  and the part folder is removed.

The fingerprint covers the stage name and its settings, so changing a setting starts a fresh
part folder instead of silently reusing stale results.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from svdcli.errors import SvdError
from svdcli.manifest.io import write_parquet_atomic
from svdcli.manifest.schema import schema_for

TASK_COLUMN = "_task"


@dataclass(frozen=True)
class Task:
    """One unit of work: `key` is unique and stable across runs; `payload` must pickle."""

    key: str
    payload: Any


class Stage:
    """Base class for a curation stage. Subclasses set `name`/`columns` and implement `process`."""

    name: str = "stage"
    columns: tuple[str, ...] = ()
    unit: str = "videos"  # what a task is, for the progress bar
    row_unit: str = "rows"  # what a row is, for the progress bar

    def settings(self) -> dict:
        """Everything that changes the stage's output; it feeds the fingerprint."""
        return {}

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


@dataclass
class RunResult:
    tables: list[pa.Table]
    tasks_done: int
    tasks_total: int
    rows: int
    errors: int
    seconds: float

    @property
    def complete(self) -> bool:
        return self.tasks_done == self.tasks_total


# --- worker side -------------------------------------------------------------------------
_WORKER_STAGE: Stage | None = None
_WORKER_SETUP_ERROR: SvdError | None = None


def _init_worker(stage: Stage, threads: int) -> None:
    """Runs first in each (spawned) worker: thread limits before any library starts its pool."""
    global _WORKER_STAGE, _WORKER_SETUP_ERROR
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    _limit_threads(threads)
    try:
        stage.setup()
    except SvdError as exc:  # e.g. weights that do not fit the model: the parent reports it as is
        _WORKER_SETUP_ERROR = exc
    _WORKER_STAGE = stage


def _limit_threads(threads: int) -> int | None:
    """Set OpenCV's thread count; returns the previous one (None without OpenCV)."""
    try:
        import cv2

        previous = cv2.getNumThreads()
        cv2.setNumThreads(threads)
        return previous
    except ImportError:
        return None


def _run_task(stage: Stage | None, task: Task) -> tuple[str, list[dict]]:
    stage = stage or _WORKER_STAGE
    try:
        rows = stage.process(task.payload)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing task must not stop the run
        message = f"{type(exc).__name__}: {exc}"
        if not str(exc):
            message += " " + traceback.format_exc(limit=2).strip().splitlines()[-1]
        rows = stage.error_rows(task.payload, message)
    return task.key, rows


def _run_task_in_worker(task: Task) -> tuple[str, list[dict]]:
    if _WORKER_SETUP_ERROR is not None:  # raised again in the parent by the task's future
        raise _WORKER_SETUP_ERROR
    return _run_task(None, task)


# --- parent side -------------------------------------------------------------------------
class PartStore:
    """Atomic Parquet part files of one stage run, and the task keys they already cover.

    Every write gets a new name, `part-<time ns>-r<rank>-<random>.parquet`, written to a temp
    file and renamed: ranks (or machines) sharing the folder never write onto each other's
    parts. Names sort in the order they were written (by the clock; one writer's names always
    increase; parts of the earlier numbered layout, `part-000000.parquet`, sort first), and
    `read_all` relies on that order to keep the latest rows of a task written twice.
    """

    def __init__(self, folder: Path, columns: Iterable[str], rank: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.schema = schema_for(list(columns)).append(pa.field(TASK_COLUMN, pa.string()))
        self.rank = rank
        self._last_ns = 0

    def parts(self) -> list[Path]:
        """The written parts, oldest first."""
        return sorted(self.folder.glob("part-*.parquet"))

    def done_keys(self) -> set[str]:
        keys: set[str] = set()
        for part in self.parts():
            keys.update(pq.read_table(part, columns=[TASK_COLUMN]).column(TASK_COLUMN).to_pylist())
        return keys

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        arrays = [pa.array([r.get(f.name) for r in rows], type=f.type) for f in self.schema]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        name = f"part-{self._last_ns:020d}-r{self.rank:03d}-{uuid.uuid4().hex[:12]}.parquet"
        write_parquet_atomic(table, self.folder / name)

    def read_all(self) -> pa.Table:
        tables = [pq.read_table(p, schema=self.schema) for p in self.parts()]
        if not tables:
            return self.schema.empty_table()
        part_of_row = [k for k, t in enumerate(tables) for _ in range(t.num_rows)]
        return _dedupe_tasks(pa.concat_tables(tables), part_of_row)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _dedupe_tasks(table: pa.Table, part_of_row: list[int]) -> pa.Table:
    """Keep the rows of the last part that wrote each task (a task is never split over parts);
    parts are numbered in the order they were written."""
    keys = table.column(TASK_COLUMN).to_pylist()
    last_part = dict(zip(keys, part_of_row))  # ascending part numbers: the last one stays
    keep = [i for i, (k, part) in enumerate(zip(keys, part_of_row)) if last_part[k] == part]
    return table if len(keep) == len(keys) else table.take(keep)


def parts_folder(out: Path, stage: Stage) -> Path:
    out = Path(out)
    return out.parent / f"{out.name}.parts" / f"{stage.name}-{stage.fingerprint()}"


def run_stage(stage: Stage, tasks: list[Task], out: Path, *, workers: int = 1, rank: int = 0,
              world_size: int = 1, flush_rows: int = 256, flush_seconds: float = 30.0,
              threads_per_worker: int = 1, progress: bool = True, describe: str | None = None) -> RunResult:
    """Run `stage` over its share of `tasks`, resuming from earlier part files.

    Returns the parts as a table (with `_task`) when every task of the whole run is done;
    otherwise `tables` is empty and the caller should not merge yet.
    """
    t0 = time.perf_counter()
    store = PartStore(parts_folder(out, stage), list(stage.columns), rank)
    _write_run_info(store.folder, stage)
    done = store.done_keys()
    mine = [t for i, t in enumerate(tasks) if i % world_size == rank and t.key not in done]
    counts = {"rows": 0, "errors": 0, "tasks": 0}
    buffer: list[dict] = []
    last_flush = time.monotonic()

    def collect(key: str, rows: list[dict]) -> None:
        nonlocal last_flush
        for r in rows:
            r[TASK_COLUMN] = key
        buffer.extend(rows)
        counts["tasks"] += 1
        counts["rows"] += len(rows)
        counts["errors"] += sum(stage.is_error(r) for r in rows)
        if len(buffer) >= flush_rows or time.monotonic() - last_flush > flush_seconds:
            store.write(buffer)
            buffer.clear()
            last_flush = time.monotonic()

    bar = _Progress(stage, len(tasks), len(tasks) - len(mine) if world_size == 1 else 0, progress, describe)
    try:
        with bar:
            if workers <= 1:
                _limit_threads(max(1, threads_per_worker))
                stage.setup()
                for task in mine:
                    collect(*_run_task(stage, task))
                    bar.update(counts)
            else:
                _run_pool(stage, mine, workers, threads_per_worker, collect, lambda: bar.update(counts))
    finally:
        store.write(buffer)  # keep finished work, also on Ctrl-C
        buffer.clear()
    done = store.done_keys()
    total_done = sum(t.key in done for t in tasks)
    seconds = time.perf_counter() - t0
    tables = [store.read_all()] if total_done == len(tasks) else []
    return RunResult(tables, total_done, len(tasks), counts["rows"], counts["errors"], seconds)


def _run_pool(stage, tasks, workers, threads, collect, on_progress) -> None:
    """Keep at most 2*workers tasks in flight so results stream back in order of completion.

    Workers are spawned, not forked: a child forked after the parent ran OpenMP (torch),
    OpenCV or onnxruntime thread pools can deadlock on its first parallel call, and a recipe
    runs several stages in one parent process.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(stage, max(1, threads))) as pool:
        pending = set()
        it = iter(tasks)
        try:
            for task in it:
                pending.add(pool.submit(_run_task_in_worker, task))
                if len(pending) >= 2 * workers:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        collect(*f.result())
                    on_progress()
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    collect(*f.result())
                on_progress()
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def _write_run_info(folder: Path, stage: Stage) -> None:
    info = folder / "stage.json"
    if not info.exists():  # written aside and renamed: ranks starting together each write a whole file
        tmp = folder / f".stage.json.{uuid.uuid4().hex[:12]}.tmp"
        tmp.write_text(json.dumps({"stage": stage.name, "settings": stage.settings()}, indent=1, default=str))
        os.replace(tmp, info)


def clean_parts(out: Path, stage: Stage) -> None:
    """Remove this run's part folder (after a successful merge) and the parent if now empty."""
    folder = parts_folder(out, stage)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass


class _Progress:
    """A rich progress bar: tasks done of total, rows and errors so far."""

    def __init__(self, stage: Stage, total: int, already: int, enabled: bool, describe: str | None):
        self.enabled = enabled
        self.stage, self.total, self.already = stage, total, already
        self.describe = describe or stage.name
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn(self.stage.unit), TextColumn("{task.fields[info]}"),
                                 TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False)
            self._bar.__enter__()
            self._id = self._bar.add_task(self.describe, total=self.total, completed=self.already,
                                          info="(resumed)" if self.already else "")
        return self

    def update(self, counts: dict) -> None:
        if self._bar is not None:
            info = f"· {counts['rows'] - counts['errors']} {self.stage.row_unit} · {counts['errors']} errors"
            self._bar.update(self._id, completed=self.already + counts["tasks"], info=info)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)
