"""Running Blender: where it is, and the worker processes that render a list of objects.

Blender runs in its own process and its own Python (svdcli/render/blender_worker.py), as the
Objaverse rendering scripts run `blender -b -P script.py`: the `bpy` wheel is built against
numpy 1.x and requires numpy < 2, which cannot live beside this project's numpy 2, and a
separate process also keeps Blender's global state and any crash away from ours. Two kinds of
executable work:
- a Python interpreter that imports bpy (`make setup` builds one in .venv-render with the
  bpy wheel from PyPI): `python blender_worker.py JOB.json`;
- a Blender binary: `blender -b --factory-startup -P blender_worker.py -- JOB.json`.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from svdcli.errors import SvdError

ENV_VAR = "SVD_BLENDER"
WORKER = Path(__file__).with_name("blender_worker.py")
MARK = "SVDRENDER "
INSTALL_HINT = ("install Blender's Python module in its own environment (it needs numpy < 2): "
                "`python3.11 -m venv .venv-render && .venv-render/bin/pip install bpy==5.0.1` "
                "(`make setup` does this), then set SVD_BLENDER=.venv-render/bin/python or pass --blender; "
                "a Blender 4.2+ binary works too (--blender /path/to/blender)")


def find_blender(explicit: str | Path | None = None) -> Path:
    """The executable to render with: `explicit`, $SVD_BLENDER, .venv-render beside this checkout,
    this interpreter when it has bpy, or `blender` on PATH; else an error saying how to install it."""
    for candidate, origin in ((explicit, "--blender"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file() or not os.access(path, os.X_OK):
                raise SvdError(f"{origin} {candidate}: not an executable file; {INSTALL_HINT}")
            return path
    local = Path(__file__).resolve().parents[2] / ".venv-render" / "bin" / "python"
    if local.is_file():
        return local
    if importlib.util.find_spec("bpy") is not None:
        return Path(sys.executable)
    on_path = shutil.which("blender")
    if on_path:
        return Path(on_path)
    raise SvdError(f"svd render needs Blender and none was found; {INSTALL_HINT}")


def worker_command(blender: Path, job: Path) -> list[str]:
    if blender.name.startswith("python"):
        return [str(blender), str(WORKER), str(job)]
    return [str(blender), "-b", "--factory-startup", "--python-exit-code", "1", "-P", str(WORKER), "--", str(job)]


@dataclass
class WorkerJob:
    """Objects one Blender process renders: [{"id", "mesh", "out", "poses"}], with shared settings."""

    objects: list[dict]
    settings: dict
    reports: dict[str, dict] = field(default_factory=dict)   # id -> the worker's report
    log_tail: list[str] = field(default_factory=list)        # last lines Blender printed


def run_workers(jobs: list[WorkerJob], blender: Path, on_report: Callable[[dict], None],
                timeout: float | None = None) -> None:
    """Run one Blender process per job at once; `on_report(report)` is called (from reader threads,
    under a lock) as each object finishes. Objects of a process that died get a failed report."""
    lock = threading.Lock()
    threads = [threading.Thread(target=_run_one, args=(job, blender, on_report, lock, timeout), daemon=True)
               for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _run_one(job: WorkerJob, blender: Path, on_report, lock: threading.Lock, timeout: float | None) -> None:
    with tempfile.TemporaryDirectory(prefix="svd-render-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps({"settings": job.settings, "objects": job.objects}))
        env = {**os.environ, "OMP_NUM_THREADS": str(job.settings["threads"])}
        proc = subprocess.Popen(worker_command(blender, job_file), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp)
        timer = threading.Timer(timeout, proc.kill) if timeout else None
        if timer:
            timer.start()
        try:
            for line in proc.stdout:
                if line.startswith(MARK):
                    report = json.loads(line[len(MARK):])
                    job.reports[report["id"]] = report
                    with lock:
                        on_report(report)
                else:
                    job.log_tail = (job.log_tail + [line.rstrip()])[-20:]
            code = proc.wait()
        finally:
            if timer:
                timer.cancel()
    for obj in job.objects:
        if obj["id"] not in job.reports:
            tail = " | ".join(line for line in job.log_tail[-5:] if line)
            report = {"id": obj["id"], "ok": False,
                      "error": f"Blender exited with code {code} before rendering it ({tail[-600:]})"}
            job.reports[obj["id"]] = report
            with lock:
                on_report(report)
