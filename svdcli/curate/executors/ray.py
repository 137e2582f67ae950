"""The Ray executor: the same stages and tasks as the local executor, on a Ray cluster.

- Per-video stages (cuts, motion: `Resources.loads_model` false) run as Ray tasks, one per
  task, each reserving `Resources.cpus` / `gpus` (fractions allowed). The stage goes to the
  object store once (it pickles as its settings); a worker process sets it up on its first
  task and keeps it for the next ones.
- Model stages (text, clip, caption) run on a pool of actors, each of which loads its model
  once in `setup()` and then takes task after task; the pool has one actor per reserved slot
  the cluster can hold (`workers` caps it). Each actor counts its tasks, the seconds it spent
  in them and, for a stage with a `throughput` column (caption: output tokens), that column's
  sum; after the pool's last task `worker_stats` holds one dict per actor (tokens per busy
  second is the engine's rate on that GPU, the figure a capacity plan needs).
- Workers read the videos themselves: a task carries a path and row fields, never frames, so
  the object store holds stages and rows only.
- Faults: an exception inside `process` is the video's error (a TaskFailure, as locally, no
  retry). A worker process or node that dies takes its task with it: Ray runs it again, up to
  `max_attempts` times in all, then the task becomes a TaskFailure naming the crash. Part
  files and completion markers are the runner's (see `svdcli.curate.parts`), so a run that
  is killed resumes on either executor.
- `resources` (a recipe's `resources:` mapping, stage -> {num_cpus, num_gpus}) replaces what a
  stage asks for per worker, e.g. half a GPU per caption actor so two share a device.
- `map_calls(fn, items)` runs any picklable function the same way (`svd pack` writes its shards
  with it: each call writes one shard and its completion marker to shared storage).
- At most `in_flight` tasks are submitted at a time, and results come back in completion
  order, so the driver's memory stays bounded on corpora of millions of videos.

Ray 2.60 turns on token authentication by default: `ray start` writes `~/.ray/auth_token`, and
a driver that connects to `HOST:PORT` must run in token mode to send it; the executor sets
RAY_AUTH_MODE=token when a token is present (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or that file)
and the variable is unset.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from svdcli.curate.executors.base import Outcome, TaskFailure, run_task
from svdcli.curate.stage import Resources, Stage, Task
from svdcli.errors import SvdError
from svdcli.optional import imported

MAX_ATTEMPTS = 3
_STAGES: dict[str, Stage] = {}  # per worker process: stages already set up, by fingerprint


def _ready_stage(stage: Stage) -> Stage:
    key = f"{stage.name}-{stage.fingerprint()}"
    if key not in _STAGES:
        stage.setup()
        _STAGES[key] = stage
    return _STAGES[key]


def _task_body(stage: Stage, task: Task) -> Outcome:
    return run_task(_ready_stage(stage), task)


_SHARED: dict[str, Any] = {}  # per worker process: the last shared object of map_calls, by reference


def _call_with_shared(fn, item, holder: list):
    import ray

    key = holder[0].hex()
    if key not in _SHARED:
        _SHARED.clear()  # one at a time: a new call's object replaces the last one
        _SHARED[key] = ray.get(holder[0])
    return fn(item, _SHARED[key])


class _Worker:
    """An actor of a model stage: sets the stage up once, then runs tasks, counting what it did."""

    def __init__(self, stage: Stage, threads: int):
        import time

        os.environ["OMP_NUM_THREADS"] = str(threads)
        self.stage = stage
        t0 = time.perf_counter()
        stage.setup()
        self.stats = {"node": _node_name(), "setup_seconds": time.perf_counter() - t0, "tasks": 0,
                      "busy_seconds": 0.0, "metered": 0.0}

    def run(self, task: Task) -> Outcome:
        import time

        t0 = time.perf_counter()
        outcome = run_task(self.stage, task)
        self.stats["tasks"] += 1
        self.stats["busy_seconds"] += time.perf_counter() - t0
        column = self.stage.throughput[0] if self.stage.throughput else None
        if column and isinstance(outcome, list):
            self.stats["metered"] += sum(row.get(column) or 0 for row in outcome)
        return outcome

    def report(self) -> dict:
        return dict(self.stats)


def _node_name() -> str:
    import socket

    return socket.gethostname()


class RayExecutor:
    """Stages on the Ray cluster at `address` ('auto', 'HOST:PORT', or None: a local one)."""

    def __init__(self, address: str | None = "auto", workers: int = 0, threads: int = 1,
                 max_attempts: int = MAX_ATTEMPTS, in_flight: int = 0,
                 resources: dict[str, dict[str, float]] | None = None):
        self.address, self.workers, self.threads = address, workers, max(1, threads)
        self.max_attempts, self.in_flight = max(1, max_attempts), in_flight
        self.resources = dict(resources or {})
        self.worker_stats: list[dict] = []  # the actors of the last model stage (see the module docstring)

    def stage_resources(self, stage: Stage) -> Resources:
        """What one worker of `stage` reserves: the stage's own ask, with the recipe's
        num_cpus / num_gpus for that stage in its place where given."""
        res = stage.resources()
        given = self.resources.get(stage.name, {})
        return replace(res, cpus=float(given.get("num_cpus", res.cpus)), gpus=float(given.get("num_gpus", res.gpus)))

    def connect(self):
        if "RAY_AUTH_MODE" not in os.environ and _token_available():
            os.environ["RAY_AUTH_MODE"] = "token"  # read when ray loads: a driver sends its token only in token mode
        ray = imported("ray", "--executor ray")
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False, include_dashboard=False,
                         runtime_env={"env_vars": {"OMP_NUM_THREADS": str(self.threads)}})
            except ConnectionError as exc:
                raise SvdError(f"cannot reach a Ray cluster at {self.address!r} ({exc}); start one "
                               "with `ray start --head` or pass --ray-address HOST:PORT") from None
        return ray

    def map(self, stage: Stage, tasks: Sequence[Task]) -> Iterator[tuple[Task, Outcome]]:
        ray = self.connect()
        self.worker_stats = []
        if not tasks:
            return
        res = self.stage_resources(stage)
        slots = self._slots(ray, res)
        if res.loads_model:
            yield from self._on_actors(ray, stage, tasks, res, slots)
        else:
            stage_ref = ray.put(stage)
            remote = self._remote(ray, _task_body, res)
            yield from self._windowed(ray, lambda task: remote.remote(stage_ref, task), tasks, slots)

    def map_calls(self, fn: Callable[..., Any], items: Sequence[Any], *, cpus: float = 1.0,
                  gpus: float = 0.0, shared: Any = None) -> Iterator[tuple[Any, Any]]:
        """fn(item) (or fn(item, shared)) for every item as Ray tasks, in completion order:
        (item, result), or (item, TaskFailure) when fn raised or its worker died `max_attempts`
        times. `shared` goes to the object store once; each worker process unpickles it once."""
        ray = self.connect()
        res = Resources(cpus=cpus, gpus=gpus)
        if shared is None:
            remote = self._remote(ray, fn, res)
            submit = remote.remote
        else:
            holder = [ray.put(shared)]  # inside a list: the worker gets the reference, not a copy per task
            remote = self._remote(ray, _call_with_shared, res)
            submit = lambda item: remote.remote(fn, item, holder)  # noqa: E731
        for item, outcome in self._windowed(ray, submit, items, self._slots(ray, res), raise_user_errors=False):
            yield item, outcome

    def _slots(self, ray, res) -> int:
        total = ray.cluster_resources()
        fit = int(total.get("CPU", 1) // max(res.cpus, 1e-3))
        if res.gpus:
            fit = min(fit, int(total.get("GPU", 0) // res.gpus))
            if fit < 1:
                raise SvdError(f"the stage asks for {res.gpus:g} GPU per worker; the cluster has "
                               f"{total.get('GPU', 0):g}")
        return max(1, min(fit, self.workers) if self.workers else fit)

    def _remote(self, ray, fn, res: Resources):
        return ray.remote(fn).options(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=self.max_attempts - 1)

    def _windowed(self, ray, submit, items, slots: int, raise_user_errors: bool = True) -> Iterator:
        """submit(item) for every item, at most `in_flight` (default 4 per slot) at a time."""
        limit = self.in_flight or 4 * slots
        todo, pending = list(reversed(items)), {}
        try:
            while todo or pending:
                while todo and len(pending) < limit:
                    item = todo.pop()
                    pending[submit(item)] = item
                done, _ = ray.wait(list(pending), num_returns=1)
                item = pending.pop(done[0])
                yield item, self._outcome(ray, done[0], self.max_attempts, raise_user_errors)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def _on_actors(self, ray, stage, tasks, res, slots) -> Iterator[tuple[Task, Outcome]]:
        actor = ray.remote(_Worker).options(num_cpus=res.cpus, num_gpus=res.gpus, max_restarts=-1,
                                            max_task_retries=0)
        stage_ref = ray.put(stage)
        pool = [actor.remote(stage_ref, self.threads) for _ in range(min(slots, len(tasks)))]
        todo = [(t, 1) for t in reversed(tasks)]
        pending: dict = {}  # ref -> (task, attempt, actor)
        idle = list(pool)
        try:
            while todo or pending:
                while todo and idle:
                    task, attempt = todo.pop()
                    worker = idle.pop()
                    pending[worker.run.remote(task)] = (task, attempt, worker)
                done, _ = ray.wait(list(pending), num_returns=1)
                task, attempt, worker = pending.pop(done[0])
                idle.append(worker)  # a dead actor restarts; it stays in the pool
                try:
                    outcome = ray.get(done[0])
                except ray.exceptions.TaskCancelledError:
                    raise
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ObjectLostError) as exc:
                    if attempt < self.max_attempts:
                        todo.append((task, attempt + 1))
                        continue
                    outcome = TaskFailure(_crash(exc, attempt))
                except ray.exceptions.RayTaskError as exc:  # setup() failed in the actor
                    outcome = _setup_failure(exc)
                yield task, outcome
            self.worker_stats = _reports(ray, pool)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            for worker in pool:
                ray.kill(worker)

    @staticmethod
    def _outcome(ray, ref, attempts: int, raise_user_errors: bool = True):
        try:
            return ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                ray.exceptions.ObjectLostError) as exc:
            return TaskFailure(_crash(exc, attempts))
        except ray.exceptions.RayTaskError as exc:
            return _setup_failure(exc, raise_user_errors)


def _reports(ray, pool) -> list[dict]:
    """Each live actor's counts (an actor that died and restarted reports since its restart)."""
    reports = []
    for worker in pool:
        try:
            reports.append(ray.get(worker.report.remote(), timeout=30))
        except Exception:  # noqa: BLE001 - a figure lost with a dead actor must not fail a finished run
            continue
    return reports


def _setup_failure(exc, raise_user_errors: bool = True) -> TaskFailure:
    """What an exception raised on a worker outside `run_task` (the stage's setup) means: an
    SvdError (missing weights, a bad setting) is the user's and stops the run; others fail the task."""
    cause = exc.as_instanceof_cause()
    if raise_user_errors and isinstance(cause, SvdError):
        raise SvdError(str(cause)) from None
    return TaskFailure(f"{type(cause).__name__}: {cause}")


def _token_available() -> bool:
    """Whether this machine holds a Ray auth token (`ray start` writes ~/.ray/auth_token)."""
    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _crash(exc: Exception, attempts: int) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"worker died on {attempts} attempts ({type(exc).__name__}: {first[:200]})"
