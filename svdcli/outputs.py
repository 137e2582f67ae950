"""Where commands write: checked before the work starts, and OS errors while writing turned into
one line naming the path and the problem (no space left, read-only, permission denied).

A write error must not leave half a file where a good one was: every writer here goes through
a temp file and a rename, so a full disk or a read-only folder leaves earlier outputs as they were.
"""
from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from svdcli.errors import SvdError

REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "symbolic link loop",
    errno.EFBIG: "file too large for the file system",
}


class OutputError(SvdError):
    """A path this command must write cannot be written; the message names it and says why."""


def reason(exc: OSError) -> str:
    """What went wrong, in words: ours for the usual errnos, else the system's."""
    return REASONS.get(exc.errno, exc.strerror or type(exc).__name__)


def os_error_line(exc: OSError, path: str | os.PathLike | None = None) -> str:
    """`<path>: <problem>` for an OSError: `path` (what the command was writing, not its temp
    file), else the path the error carries."""
    where = path if path is not None else exc.filename
    return f"{os.fsdecode(where)}: {reason(exc)}" if where is not None else reason(exc)


def is_disk_error(exc: BaseException) -> bool:
    """An OSError about the place written to (space, permissions), not about the data."""
    return isinstance(exc, OSError) and exc.errno in REASONS


@contextmanager
def writing(path: str | os.PathLike):
    """Turn an OSError raised while writing `path` into an OutputError naming it: a write that
    fails on a full disk says nothing of which file it was writing."""
    try:
        yield
    except OSError as exc:
        if not is_disk_error(exc):
            raise
        raise OutputError(f"cannot write {os_error_line(exc, path)}") from None


def check_writable(path: str | os.PathLike, option: str) -> None:
    """Refuse, before any work, an output `path` (a file or folder to be made) that cannot be
    written: its nearest existing folder must take a new file. Creates nothing that stays."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".svd-write-check.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write in {folder}: {reason(exc)}") from None
