"""Reading and writing manifests: atomic writes, schema casting, version and history metadata."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from svdcli.errors import SvdError
from svdcli.manifest.schema import COLUMNS, HISTORY_KEY, MANIFEST_VERSION, VERSION_KEY, schema_for


class ManifestError(SvdError):
    """A manifest that cannot be read or written; the message says what to do."""


def write_parquet_atomic(table: pa.Table, path: str | Path, metadata: dict[bytes, bytes] | None = None) -> Path:
    """Write `table` to `path` through a temp file in the same folder and a rename: a failed
    write (a full disk) leaves the old file whole and is an OutputError naming `path`."""
    from svdcli.outputs import writing

    path = Path(path)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a manifest is shared data
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cast_to_schema(table: pa.Table) -> pa.Table:
    """Order and cast the known columns; columns unknown to the schema are refused."""
    known = schema_for(table.column_names)
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in known], schema=known)


def table_from_rows(rows: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    """Build a schema-typed table from row dicts (missing keys become nulls)."""
    schema = schema_for(columns)
    arrays = {f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema}
    return pa.Table.from_pydict(arrays, schema=schema)


def put_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    """`table` with column `name` set to `values`: replaced in place if present, else appended."""
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def manifest_history(table_or_path: pa.Table | str | Path) -> list[dict]:
    """The list of stage records (stage, settings, fingerprint, time) stored in the file."""
    schema = table_or_path.schema if isinstance(table_or_path, pa.Table) else pq.read_schema(table_or_path)
    raw = (schema.metadata or {}).get(HISTORY_KEY)
    return json.loads(raw) if raw else []


def write_manifest(table: pa.Table, path: str | Path, record: dict | None = None,
                   history: list[dict] | None = None) -> Path:
    """Cast to the schema, append `record` to the history and write atomically."""
    table = cast_to_schema(table)
    hist = list(history or [])
    if record is not None:
        hist.append({**record, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    meta = {VERSION_KEY: str(MANIFEST_VERSION).encode(), HISTORY_KEY: json.dumps(hist).encode()}
    return write_parquet_atomic(table, path, meta)


def read_manifest(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """Read a manifest, checking that it is one and that this version can read it."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"manifest not found: {path} (create one with `svd curate cuts VIDEOS --out {path}`)")
    try:
        schema = pq.read_schema(path)
    except Exception as exc:  # pyarrow raises several types for a non-Parquet file
        raise ManifestError(f"{path} is not a readable Parquet file: {exc}") from exc
    version = (schema.metadata or {}).get(VERSION_KEY)
    if version is None:
        raise ManifestError(f"{path} has no svdcli manifest version in its metadata; was it written by svd?")
    if int(version) > MANIFEST_VERSION:
        raise ManifestError(f"{path} is manifest version {int(version)}; this svdcli reads up to "
                            f"{MANIFEST_VERSION}. Upgrade svdcli.")
    return read_parquet(path, columns=columns)


def read_parquet(path: str | Path, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """One Parquet file as a table (cast to `schema` when given). `pq.read_table` gives the same
    table through pyarrow.dataset, whose import pulls in pandas: ~0.15 s of a command's start-up."""
    table = pq.ParquetFile(path).read(columns=columns)
    if schema is None:
        return table
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def has_status(table: pa.Table, status: str) -> pa.ChunkedArray:
    """The mask of `table`'s rows whose status is `status` (the scalar typed: an untyped one makes
    pyarrow import pandas to infer its type)."""
    import pyarrow.compute as pc

    return pc.equal(table.column("status"), pa.scalar(status, pa.string()))


def known_columns(names: list[str]) -> list[str]:
    return [n for n in names if n in COLUMNS]
