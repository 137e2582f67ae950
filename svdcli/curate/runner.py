"""Running a stage over its tasks: this rank's share, an executor, part files, error rows, progress.

`run_stage` is the one loop every stage goes through:

- tasks are split by (rank, world_size) so several machines can share a run, and the tasks the
  part store already covers are skipped (resume);
- the rest go to an executor (`executors/`; the local one by default) and come back in order of
  completion; a task that raised becomes the stage's error rows, and the run goes on;
- results are buffered here and flushed to atomic part files every `flush_rows` rows or
  `flush_seconds` seconds, and once more when the loop ends for any reason (Ctrl-C included);
- `progress`, when given, is called with a `StageProgress` when the run starts, after every
  task and when it ends (the CLI draws its bar from these).

When every task of the whole run has a part, the parts come back as one table (with `_task`)
for the caller to merge into the output manifest; until then `tables` is empty. A run holds a
lock on its part folder (one per rank, `lock.py`): a second run of the same stage, output and
rank stops at once. Of the ranks that find every task done, the one that claims the merge gets
the tables and keeps its lock until the caller's `clean_parts` removes the folder; the others
return without them, as if work remained.
"""
from __future__ import annotations

import time
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pyarrow as pa

from svdcli.curate.executors import Executor, TaskFailure
from svdcli.curate.executors.local import LocalExecutor
from svdcli.curate.lock import release, take, try_lock
from svdcli.curate.parts import MERGE_CLAIM, TASK_COLUMN, PartStore, parts_folder, write_run_info
from svdcli.curate.stage import Stage, Task


@dataclass
class RunResult:
    tables: list[pa.Table]
    tasks_done: int
    tasks_total: int
    rows: int
    errors: int
    seconds: float
    metered: float = 0.0  # this run's sum of the stage's `throughput` column (e.g. output tokens)
    workers: list[dict] = field(default_factory=list)  # per-worker figures an executor reports (Ray actors)

    @property
    def rate(self) -> float:
        """`metered` per second of this run."""
        return self.metered / self.seconds if self.seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        """Every task is done and this run merges them (`tables` holds the parts)."""
        return bool(self.tables)


@dataclass(frozen=True)
class StageProgress:
    """Where a stage run stands: sent at 'start', after every 'task', and at the 'end'."""

    event: str  # 'start' | 'task' | 'end'
    describe: str  # what runs, e.g. 'text (dbnet)'
    unit: str  # what a task is ('videos')
    row_unit: str  # what a row is ('clips', 'rows')
    total: int  # tasks of the whole run (every rank)
    resumed: int  # tasks found done in the part files when the run started (single-rank runs)
    tasks: int = 0  # tasks this run finished so far
    rows: int = 0
    errors: int = 0
    metered: float = 0.0  # sum of the stage's `throughput` column so far (e.g. output tokens)
    meter_unit: str = ""  # what `metered` counts; '' for a stage without a throughput column
    seconds: float = 0.0  # since this run started


ProgressCallback = Callable[[StageProgress], None]


@dataclass
class RunOptions:
    """How a stage runs, whichever stage it is (the recipe and the stage commands pass these on)."""

    workers: int = 1  # local worker processes
    progress: ProgressCallback | None = None
    rank: int = 0  # this machine's share of every stage's tasks
    world_size: int = 1
    executor: Executor | None = None  # None: the local executor with `workers`

    def stage_kwargs(self) -> dict:
        return {"workers": self.workers, "progress": self.progress, "rank": self.rank,
                "world_size": self.world_size, "executor": self.executor}

    def alone(self) -> RunOptions:
        """The options for a rank that goes on by itself (the others have stopped)."""
        return replace(self, rank=0, world_size=1)


def run_stage(stage: Stage, tasks: list[Task], out: Path, *, workers: int = 1, executor: Executor | None = None,
              rank: int = 0, world_size: int = 1, flush_rows: int = 256, flush_seconds: float = 30.0,
              threads_per_worker: int = 1, progress: ProgressCallback | None = None,
              describe: str | None = None) -> RunResult:
    """Run `stage` over its share of `tasks`, resuming from earlier part files.

    Returns the parts as a table (with `_task`) when every task of the whole run is done;
    otherwise `tables` is empty and the caller should not merge yet.
    """
    what = f"the {stage.name} stage's parts of {out}" + (f" as rank {rank}" if world_size > 1 else "")
    for attempt in range(3):
        store = PartStore(parts_folder(out, stage), list(stage.columns), rank)
        lock = store.folder / f".run.rank{rank:03d}.lock"
        try:
            take(lock, what)
            break
        except FileNotFoundError:  # a run that merged removed the folder just now: make it afresh
            if attempt == 2:
                raise
    try:
        result = _run_locked(stage, tasks, store, executor or LocalExecutor(workers, threads_per_worker), rank,
                             world_size, flush_rows, flush_seconds, progress, describe)
    except BaseException:
        release(lock)
        raise
    if not result.complete:
        release(lock)
    return result  # a run that merges keeps its lock until clean_parts removes the folder


def _run_locked(stage: Stage, tasks: list[Task], store: PartStore, executor: Executor, rank: int, world_size: int,
                flush_rows: int, flush_seconds: float, progress: ProgressCallback | None,
                describe: str | None) -> RunResult:
    t0 = time.perf_counter()
    write_run_info(store.folder, stage)
    done = store.done_keys()
    mine = [t for i, t in enumerate(tasks) if i % world_size == rank and t.key not in done]
    meter = stage.throughput[0] if stage.throughput else None
    report = StageProgress("start", describe or stage.name, stage.unit, stage.row_unit, len(tasks),
                           len(tasks) - len(mine) if world_size == 1 else 0,
                           meter_unit=stage.throughput[1] if stage.throughput else "")
    buffer = _Buffer(store, flush_rows, flush_seconds)
    if progress:
        progress(report)
    try:
        with closing(executor.map(stage, mine)) as outcomes:
            for task, outcome in outcomes:
                rows = stage.error_rows(task.payload, outcome.message) if isinstance(outcome, TaskFailure) else outcome
                buffer.add(task.key, rows)
                report = replace(report, event="task", tasks=report.tasks + 1, rows=report.rows + len(rows),
                                 errors=report.errors + sum(stage.is_error(r) for r in rows),
                                 metered=report.metered + (sum(r.get(meter) or 0 for r in rows) if meter else 0),
                                 seconds=time.perf_counter() - t0)
                if progress:
                    progress(report)
    finally:
        buffer.flush()  # keep finished work, also on Ctrl-C
        if progress:
            progress(replace(report, event="end"))
    done = store.done_keys()
    total_done = sum(t.key in done for t in tasks)
    seconds = time.perf_counter() - t0
    # one merge: a rank finishing with another claims it (the claim goes with the folder, clean_parts)
    try:
        merges = total_done == len(tasks) and try_lock(store.folder / MERGE_CLAIM) is None
    except FileNotFoundError:  # another rank merged and removed the folder in between
        merges = False
    tables = [store.read_all()] if merges else []
    return RunResult(tables, total_done, len(tasks), report.rows, report.errors, seconds, report.metered,
                     list(getattr(executor, "worker_stats", None) or []))


class _Buffer:
    """Rows waiting for the next part file, each tagged with its task key."""

    def __init__(self, store: PartStore, most_rows: int, most_seconds: float):
        self.store, self.most_rows, self.most_seconds = store, most_rows, most_seconds
        self.rows: list[dict] = []
        self.last_flush = time.monotonic()

    def add(self, key: str, rows: list[dict]) -> None:
        for r in rows:
            r[TASK_COLUMN] = key
        self.rows.extend(rows)
        if len(self.rows) >= self.most_rows or time.monotonic() - self.last_flush > self.most_seconds:
            self.flush()

    def flush(self) -> None:
        self.store.write(self.rows)
        self.rows = []
        self.last_flush = time.monotonic()
