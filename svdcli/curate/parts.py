"""The part store of a stage run: atomic Parquet part files, the tasks they cover, the final merge.

While a stage runs, finished rows sit in part files under `<out>.parts/<stage>-<fingerprint>/`,
every row carrying its task key in `_task`; a rerun reads the keys back and skips the tasks they
cover, so a killed run loses at most what was not flushed yet, never a written part. The folder
also holds `stage.json` (the stage and its settings, for a person looking at a half-done run).
When every task of the run has a part, the parts are read as one table (`read_all`) for the
merge into the output manifest, and the folder is removed (`clean_parts`).

The fingerprint covers the stage name and its settings, so changing a setting starts a fresh
part folder instead of silently reusing stale results. Nothing here knows how tasks ran: parts
written by any executor, rank or machine resume each other.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from svdcli.curate.stage import Stage
from svdcli.manifest.io import read_parquet, write_parquet_atomic
from svdcli.manifest.schema import schema_for

TASK_COLUMN = "_task"
MERGE_CLAIM = ".merge.lock"  # the process merging the parts (lock.py), removed with the folder


class PartStore:
    """Atomic Parquet part files of one stage run, and the task keys they already cover.

    Every write gets a new name, `part-<time ns>-r<rank>-<random>.parquet`, written to a temp
    file and renamed: ranks (or machines) sharing the folder never write onto each other's
    parts. Names sort in the order they were written (by the clock; one writer's names always
    increase; parts of the earlier numbered layout, `part-000000.parquet`, sort first), and
    `read_all` relies on that order to keep the latest rows of a task written twice.
    """

    def __init__(self, folder: Path, columns: Iterable[str], rank: int = 0):
        from svdcli.outputs import writing

        self.folder = Path(folder)
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        self.schema = schema_for(list(columns)).append(pa.field(TASK_COLUMN, pa.string()))
        self.rank = rank
        self._last_ns = 0

    def parts(self) -> list[Path]:
        """The written parts, oldest first."""
        return sorted(self.folder.glob("part-*.parquet"))

    def done_keys(self) -> set[str]:
        """The task keys of the written parts; a part removed while this reads (another rank's
        merge cleaning the folder) is left out, so the run looks unfinished rather than failing."""
        keys: set[str] = set()
        for part in self.parts():
            try:
                keys.update(read_parquet(part, columns=[TASK_COLUMN]).column(TASK_COLUMN).to_pylist())
            except FileNotFoundError:
                continue
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
        tables = [read_parquet(p, schema=self.schema) for p in self.parts()]
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


def write_run_info(folder: Path, stage: Stage) -> None:
    """`stage.json` beside the parts: which stage, with which settings."""
    from svdcli.outputs import writing

    info = folder / "stage.json"
    if not info.exists():  # written aside and renamed: ranks starting together each write a whole file
        tmp = folder / f".stage.json.{uuid.uuid4().hex[:12]}.tmp"
        try:
            with writing(info):
                tmp.write_text(json.dumps({"stage": stage.name, "settings": stage.settings()}, indent=1,
                                          default=str))
                os.replace(tmp, info)
        finally:
            tmp.unlink(missing_ok=True)


def clean_parts(out: Path, stage: Stage) -> None:
    """Remove this run's part folder after its merge (the run's lock and merge claim go with it),
    and the parent if now empty."""
    folder = parts_folder(out, stage)
    # renamed first: a run entering the folder now finds none and starts a fresh one, instead
    # of writing into a folder half deleted under it
    trash = folder.with_name(f".removed-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass
