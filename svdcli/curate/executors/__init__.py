"""Where a stage's tasks run; the contract is in `base.py`, the executors beside it."""
from __future__ import annotations

from svdcli.curate.executors.base import Executor, Outcome, TaskFailure, run_task  # noqa: F401


EXECUTORS = ("local", "ray")


def executor_for(name: str, ray_address: str = "auto", resources: dict | None = None) -> "Executor | None":
    """The executor a command's `--executor` names (None: the local one the runner builds).
    `resources` (stage -> {num_cpus, num_gpus}) is what Ray reserves per worker; the local
    executor runs `--workers` processes and reads none of it."""
    if name == "local":
        return None
    if name == "ray":
        from svdcli.curate.executors.ray import RayExecutor

        return RayExecutor(ray_address, resources=resources)
    from svdcli.errors import SvdError

    raise SvdError(f"unknown executor {name!r}; use {' or '.join(EXECUTORS)}")
