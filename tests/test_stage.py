"""The stage runner's part files: writers sharing a folder lose nothing, the last write of a task wins."""
from __future__ import annotations

import multiprocessing
import shutil

import pyarrow.parquet as pq
import pytest

from svdcli.curate.parts import TASK_COLUMN, PartStore, parts_folder
from svdcli.curate.runner import run_stage
from svdcli.curate.stage import Stage, Task
from svdcli.errors import SvdError

COLUMNS = ("clip_id", "motion_score", "motion_error")
PARTS_PER_WRITER = 60


def rows_of(task: str, score: float, n: int = 2) -> list[dict]:
    return [{"clip_id": f"{task}/{j}", "motion_score": score, TASK_COLUMN: task} for j in range(n)]


def write_parts(folder: str, rank: int, tag: str, start) -> None:
    """One writer process: many small parts, each one task of two rows, as fast as it can."""
    store = PartStore(folder, COLUMNS, rank)
    start.wait()  # both writers begin together
    for i in range(PARTS_PER_WRITER):
        store.write(rows_of(f"{tag}{i}", float(i)))


def test_two_processes_writing_one_folder_lose_and_duplicate_nothing(tmp_path):
    """Both writers say rank 0 (a rank started twice): the harder case, as the rank alone cannot
    keep their names apart; two ranks sharing the folder is the common one."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    writers = [context.Process(target=write_parts, args=(str(tmp_path), 0, tag, start)) for tag in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
    assert [w.exitcode for w in writers] == [0, 0]
    store = PartStore(tmp_path, COLUMNS)
    assert len(store.parts()) == 2 * PARTS_PER_WRITER
    ids = store.read_all().column("clip_id").to_pylist()
    expected = [f"{tag}{i}/{j}" for tag in "ab" for i in range(PARTS_PER_WRITER) for j in range(2)]
    assert sorted(ids) == sorted(expected)  # every row once: none overwritten, none twice
    assert store.done_keys() == {f"{tag}{i}" for tag in "ab" for i in range(PARTS_PER_WRITER)}
    assert not list(tmp_path.glob(".*.tmp"))  # no temp file left behind


def test_a_task_written_again_keeps_its_latest_rows_whoever_wrote_them(tmp_path):
    PartStore(tmp_path, COLUMNS, rank=3).write(rows_of("t", 1.0) + rows_of("u", 1.0))
    PartStore(tmp_path, COLUMNS, rank=0).write(rows_of("t", 2.0))  # a later writer, a lower rank
    store = PartStore(tmp_path, COLUMNS, rank=3)
    store.write(rows_of("u", 3.0))
    store.write(rows_of("u", 4.0))  # same writer, same clock tick or not: the later part wins
    table = store.read_all().to_pylist()
    assert sorted((r[TASK_COLUMN], r["motion_score"]) for r in table) == [("t", 2.0)] * 2 + [("u", 4.0)] * 2


def test_parts_of_the_numbered_layout_resume_and_count_as_older(tmp_path):
    """A part folder left by a run of the earlier layout (part-000000.parquet, ...) still resumes."""
    store = PartStore(tmp_path, COLUMNS)
    store.write(rows_of("old", 1.0))
    shutil.move(store.parts()[0], tmp_path / "part-000000.parquet")
    assert PartStore(tmp_path, COLUMNS).done_keys() == {"old"}
    store.write(rows_of("old", 5.0))  # rewritten by the new layout: the new rows win
    assert {r["motion_score"] for r in store.read_all().to_pylist()} == {5.0}
    assert pq.read_table(tmp_path / "part-000000.parquet").num_rows == 2  # nothing rewritten in place


class RefusingSetup(Stage):
    """A stage whose model cannot be loaded: setup() raises the user's error."""

    name = "refusing"
    columns = ("clip_id", "motion_error")

    def setup(self) -> None:
        raise SvdError("cannot load /models/x.pt into open_clip tiny: size mismatch")

    def process(self, payload):
        return [{"clip_id": payload}]


def test_a_setup_error_in_worker_processes_reaches_the_user_as_is(tmp_path):
    tasks = [Task(str(k), str(k)) for k in range(4)]
    with pytest.raises(SvdError, match="cannot load /models/x.pt"):
        run_stage(RefusingSetup(), tasks, tmp_path / "out.parquet", workers=2)
    folder = parts_folder(tmp_path / "out.parquet", RefusingSetup())
    assert PartStore(folder, RefusingSetup.columns).done_keys() == set()
