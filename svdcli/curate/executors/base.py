"""Where a stage's tasks run: the seam between the runner and processes (or machines).

An executor takes a stage and tasks and hands back each task's outcome as it finishes: its rows,
or a `TaskFailure` carrying the message its error rows record. It owns workers, never files:
the runner writes part files and completion from what comes back, so a run on one executor
resumes a run on another. What every executor does (`local.py` is the reference):

- build the stage once per worker: ship the stage object (it pickles as its settings) and call
  `stage.setup()` there before the worker's first task; a setup that raises SvdError is the
  user's error (a model that does not fit its weights) and is raised from `map` as is;
- run each task through `run_task`, which turns an exception into a TaskFailure, so one bad
  video never stops a run; KeyboardInterrupt stops everything;
- yield `(task, outcome)` in order of completion; when the runner closes the iterator early
  (Ctrl-C, an error), cancel the tasks that have not started;
- place workers by `stage.resources()` where that means something (CPUs, GPUs, and whether
  setup loads a model, so a worker should live for many tasks).
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence, Union

from svdcli.curate.stage import Stage, Task


@dataclass(frozen=True)
class TaskFailure:
    """A task whose `process` raised; `message` is what its error rows record."""

    message: str


Outcome = Union[list, TaskFailure]  # a task's rows, or why it has none


class Executor(Protocol):
    def map(self, stage: Stage, tasks: Sequence[Task]) -> Iterator[tuple[Task, Outcome]]:
        """Run `stage` over `tasks`, yielding each task with its outcome as it finishes."""


def run_task(stage: Stage, task: Task) -> Outcome:
    """One task on a worker whose stage is set up: its rows, or the failure its error rows record."""
    try:
        return stage.process(task.payload)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a failing task must not stop the run
        message = f"{type(exc).__name__}: {exc}"
        if not str(exc):
            message += " " + traceback.format_exc(limit=2).strip().splitlines()[-1]
        return TaskFailure(message)

