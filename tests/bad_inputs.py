"""Broken manifests every command must refuse in one line (exit 2, no traceback): a shared table."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# kind -> words the one-line error must hold
BAD_MANIFESTS = {
    "missing": "manifest not found",
    "empty": "not a readable Parquet file",
    "truncated": "not a readable Parquet file",
    "text": "not a readable Parquet file",
    "foreign": "no svdcli manifest version",
    "folder": "not a readable Parquet file",
}


def bad_manifest(kind: str, good: Path, folder: Path) -> Path:
    """A broken stand-in for the manifest `good`, written under `folder`."""
    path = folder / f"{kind}.parquet"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("clip_id,motion_score\nc0,0.5\n")
    elif kind == "foreign":  # a Parquet file, but not written by svd
        pq.write_table(pa.table({"clip_id": ["c0"], "motion_score": [0.5]}), path)
    elif kind == "folder":
        path.mkdir()
    return path


def assert_one_line_error(result, *words: str) -> None:
    """Exit 2 and an error message holding `words`, without a traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    message = " ".join(result.output.split())  # rich wraps long lines
    for word in words:
        assert word in message, (word, result.output)
