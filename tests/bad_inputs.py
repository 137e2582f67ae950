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


# Odd inputs to `svd curate cuts` (made by tests/odd_files.py): kind -> (the row's status, words its
# `error` holds). Run with --min-length 1: each gives no clip, so the command exits 1.
ODD_VIDEOS = {
    "empty": ("error", "empty file (0 bytes)"),
    "text": ("error", "cannot open"),
    "png": ("error", "an image (png), not a video"),
    "random": ("error", "cannot open"),
    "truncated": ("error", "cannot open"),  # moov at the end, cut off before it
    "no_moov": ("error", "cannot open"),
    "half_moov": ("error", "cannot open"),
    "mp3_cover": ("error", "only a cover picture"),
    "audio_only": ("error", "no video stream"),
    "missing": ("error", "file not found"),
    "symlink_loop": ("error", "symbolic link loop"),
    "joined_ts": ("error", "timestamps go back from"),
    "one_frame": ("short", "below --min-length 1 s"),  # readable: never an error for being short
    "two_frames": ("short", "below --min-length 1 s"),
    "short_real": ("short", "below --min-length 1 s"),
}


def assert_error_line(result, code: int, *words: str) -> None:
    """Exit `code` and exactly one `error:` line (run with a wide console, so it does not wrap)
    holding every one of `words`; no traceback."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in result.output and len(errors) == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    [line] = errors
    for word in words:
        assert word in line, (word, result.output)
