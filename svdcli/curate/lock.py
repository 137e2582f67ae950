"""Lock files: one run per workdir (and rank), one merge per stage, stale locks taken over.

A lock is a small JSON file (pid, host, start time, command) created atomically: written aside,
then hard-linked to its name, which fails when the name exists (O_EXCL where links are not
supported); both are atomic on local disks and NFS. A lock whose process is gone is stale: on
its own host that is checked (the pid is no longer alive) and the lock is taken over; a lock of
another host cannot be checked from here, so the message says how to remove it by hand.

Two `svd curate run` on one workdir (or two runs of one stage on one output) as the same rank
would do the same work and race at the merge: the second stops at once instead, exit 2, naming
the first. Ranks of a shared run hold their own locks and run side by side; when two of them
finish together, the merge claim lets exactly one merge the stage and go on.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from svdcli.errors import SvdError


class Busy(SvdError):
    """Another live run holds the lock."""


def _record() -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "command": " ".join(sys.argv)[:300]}).encode()


def _read(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_bytes())
        return value if isinstance(value, dict) else {}
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written, or damaged


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _stale(holder: dict, path: Path) -> bool:
    """A lock whose process is gone (on this host), or an unreadable one older than a minute
    (its writer died between creating and filling it). This process's own old locks (a test,
    a notebook that ran before) are stale too: a run never takes a lock it already holds."""
    if not holder:
        try:
            return time.time() - path.stat().st_mtime > 60
        except OSError:
            return False
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return not isinstance(pid, int) or pid == os.getpid() or not _alive(pid)


def _create(path: Path, record: bytes) -> bool:
    """Make `path` holding `record` unless it exists; True when this call made it."""
    from svdcli.outputs import writing

    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with writing(path):
            tmp.write_bytes(record)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(record)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(path: Path, holder: dict) -> None:
    """Move a stale lock aside, and back if what was moved is not the lock judged stale (another
    process took it over in between)."""
    aside = path.with_name(f".{path.name}.stale.{uuid.uuid4().hex[:12]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if _read(aside) != holder:
        try:
            os.link(aside, path)
        except OSError:
            pass
    aside.unlink(missing_ok=True)


def try_lock(path: Path) -> dict | None:
    """Take the lock `path`: None once this process holds it, else the live holder's record."""
    record = _record()
    for _ in range(5):
        if _create(path, record):
            return None
        holder = _read(path)
        if holder is None:
            continue  # released in between
        if not _stale(holder, path):
            return holder
        _remove_stale(path, holder)
    return _read(path) or {}


def release(path: Path) -> None:
    """Remove the lock if this process holds it."""
    holder = _read(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def held_by(holder: dict) -> str:
    if not holder:
        return "a run that is still starting"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('started')}"


def take(path: Path, what: str) -> None:
    """Take the lock `path`, or raise Busy naming the holder and `what` it holds."""
    holder = try_lock(path)
    if holder is not None:
        raise Busy(f"another run holds {what} ({held_by(holder)}): wait for it to end; if it is gone "
                   f"(e.g. a crashed machine), delete {path}")


@contextmanager
def holding(path: Path, what: str):
    """Hold the lock `path` for the block (see `take`)."""
    take(path, what)
    try:
        yield
    finally:
        release(path)


def workdir_lock(workdir: Path, rank: int = 0, world_size: int = 1):
    """`svd curate run`'s lock on its workdir, one per rank of a shared run."""
    name = ".svd-run.lock" if world_size <= 1 else f".svd-run.rank{rank:03d}.lock"
    return holding(Path(workdir) / name, f"the workdir {workdir}" + (f" as rank {rank}" if world_size > 1 else ""))
