"""The local executor: tasks in this process (workers <= 1) or in a pool of spawned processes.

With several workers each process sets its thread limits, builds the stage once (`setup()`,
where models load) and runs tasks as they are handed out; at most 2 * workers tasks are in
flight, so results stream back in order of completion and an interrupted run has little
started work to lose.

Workers are spawned, not forked: a child forked after the parent ran OpenMP (torch), OpenCV or
onnxruntime thread pools can deadlock on its first parallel call, and a recipe runs several
stages in one parent process.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterator, Sequence

from svdcli.curate.executors.base import Outcome, run_task
from svdcli.curate.stage import Stage, Task
from svdcli import interrupts
from svdcli.errors import SvdError


class LocalExecutor:
    """`workers` processes on this machine (none: the tasks run here), `threads` each."""

    def __init__(self, workers: int = 1, threads: int = 1):
        self.workers, self.threads = workers, max(1, threads)

    def map(self, stage: Stage, tasks: Sequence[Task]) -> Iterator[tuple[Task, Outcome]]:
        if self.workers <= 1:
            return self._serial(stage, tasks)
        return self._pool(stage, tasks)

    def _serial(self, stage: Stage, tasks: Sequence[Task]) -> Iterator[tuple[Task, Outcome]]:
        from threadpoolctl import threadpool_limits

        limit_threads(self.threads)
        keep_freed_memory()
        # numpy is loaded already: its BLAS pool is limited now (a spawned worker's by the
        # environment, before the import), and given back its size when the stage is done
        with threadpool_limits(self.threads, user_api="blas"):
            stage.setup()
            for task in tasks:
                yield task, run_task(stage, task)

    def _pool(self, stage: Stage, tasks: Sequence[Task]) -> Iterator[tuple[Task, Outcome]]:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_init_worker,
                                 initargs=(stage, self.threads)) as pool:
            pending: dict = {}  # future -> task
            try:
                for task in tasks:
                    with interrupts.held():  # a submit may start a worker: not to be cut in half by a signal
                        pending[pool.submit(_run_in_worker, task)] = task
                    if len(pending) >= 2 * self.workers:
                        yield from _finished(pending)
                while pending:
                    yield from _finished(pending)
            except BaseException:  # Ctrl-C, a setup error, or the runner closing early
                for future in pending:
                    future.cancel()
                raise


def _finished(pending: dict) -> Iterator[tuple[Task, Outcome]]:
    """Wait for at least one task; hand back (and forget) every one that has finished."""
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for future in done:
        task = pending.pop(future)
        yield task, future.result()


# --- worker side -------------------------------------------------------------------------
_WORKER_STAGE: Stage | None = None
_WORKER_SETUP_ERROR: SvdError | None = None


def _init_worker(stage: Stage, threads: int) -> None:
    """Runs first in each (spawned) worker: thread limits before any library starts its pool."""
    global _WORKER_STAGE, _WORKER_SETUP_ERROR
    interrupts.in_worker()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    limit_threads(threads)
    keep_freed_memory()
    try:
        stage.setup()
    except SvdError as exc:  # e.g. weights that do not fit the model: the parent reports it as is
        _WORKER_SETUP_ERROR = exc
    _WORKER_STAGE = stage


def _run_in_worker(task: Task) -> Outcome:
    if _WORKER_SETUP_ERROR is not None:  # raised again in the parent by the task's future
        raise _WORKER_SETUP_ERROR
    with interrupts.task():
        return run_task(_WORKER_STAGE, task)


def cores_per_worker(workers: int) -> int:
    """A local worker's share of this machine's cores, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def limit_threads(threads: int) -> None:
    """Set OpenCV's thread count: for the loaded module, else through the environment, which
    OpenCV reads once as it loads (`OPENCV_FOR_THREADS_NUM`), so a stage that uses OpenCV only
    on its worker threads (motion) does not load it (~30 ms) before its work can start."""
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(threads)
    else:
        os.environ["OPENCV_FOR_THREADS_NUM"] = str(max(1, threads))


KEEP_FREED = 128 << 20  # bytes of freed memory glibc keeps at the top of a heap before returning any


def keep_freed_memory() -> bool:
    """Let glibc serve blocks up to 32 MB from its heaps and keep up to KEEP_FREED of freed memory
    per heap for reuse; True where it took the settings (glibc), False elsewhere.

    A curation worker allocates and frees the same large buffers for every frame (decoded
    pictures, OpenCV's flow pyramids, analysis arrays). glibc's defaults give many of them back
    to the system when freed, and the next one arrives as fresh pages the kernel must zero:
    ~120,000 page faults, 0.2-0.3 CPU s per minute of 720p through cuts + motion (`perf stat`),
    56,000 with these settings. A worker's resident memory may stay up to KEEP_FREED per heap
    above what it holds.
    """
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # this process's symbols, the C library's among them (find_library runs ldconfig)
        # M_MMAP_THRESHOLD: blocks below 32 MB (its upper bound) from the heap, not each by mmap;
        # M_TRIM_THRESHOLD: free memory at the top of a heap goes back only past KEEP_FREED
        return bool(libc.mallopt(-3, 32 << 20)) and bool(libc.mallopt(-1, KEEP_FREED))
    except (OSError, AttributeError):  # a C library without mallopt (musl, say)
        return False
