"""Reading one manifest file: the table pyarrow's dataset reader gives, without its start-up."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from svdcli.manifest.io import has_status, read_parquet, write_parquet_atomic


def test_read_parquet_gives_what_read_table_gives(tmp_path):
    table = pa.table({"clip_id": ["a", "b", "c"], "status": ["ok", "error", "ok"], "fps": [25.0, 30.0, 24.0]})
    path = write_parquet_atomic(table, tmp_path / "m.parquet", {b"svdcli.history": b"[]"})
    for columns in (None, [], ["status"], ["fps", "clip_id"]):
        ours, theirs = read_parquet(path, columns), pq.read_table(path, columns=columns)
        assert ours.equals(theirs) and ours.schema.metadata == theirs.schema.metadata
        assert ours.num_rows == 3
    wider = pa.schema([("clip_id", pa.large_string()), ("fps", pa.float32())])
    cast = read_parquet(path, schema=wider)
    assert cast.schema == wider and cast.column("fps").to_pylist() == [25.0, 30.0, 24.0]


def test_has_status_marks_the_rows_of_one_status():
    table = pa.table({"status": ["ok", "error", None, "ok"]})
    assert has_status(table, "ok").to_pylist() == [True, False, None, True]
    assert has_status(table, "short").to_pylist() == [False, False, None, False]
