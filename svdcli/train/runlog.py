"""Training logs: one JSON line per logged step (`RUN_DIR/log.jsonl`), the same scalars in
TensorBoard (`RUN_DIR/tb/`), and a progress bar with ETA. Only rank 0 writes.

Loss per sigma bucket shows which noise levels a run is still learning; the buckets are fixed
edges on sigma so curves from different runs and stages are comparable.
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from pathlib import Path

SIGMA_EDGES = (0.05, 0.2, 1.0, 5.0, 20.0)  # buckets: <0.05, 0.05-0.2, ..., >=20


def sigma_bucket(sigma: float) -> str:
    lo = 0.0
    for hi in SIGMA_EDGES:
        if sigma < hi:
            return f"{lo:g}-{hi:g}"
        lo = hi
    return f">={lo:g}"


class Meter:
    """Accumulates per-sample losses between two log lines."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.losses: list[float] = []
        self.buckets: dict[str, list[float]] = defaultdict(list)
        self.grad_norms: list[float] = []
        self.samples = 0
        self.t0 = time.perf_counter()

    def add(self, loss: float, per_sample: list[float], sigmas: list[float], grad_norm: float | None,
            samples: int) -> None:
        self.losses.append(loss)
        for l, s in zip(per_sample, sigmas):
            self.buckets[sigma_bucket(s)].append(l)
        if grad_norm is not None and math.isfinite(grad_norm):
            self.grad_norms.append(grad_norm)
        self.samples += samples

    def summary(self) -> dict:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        n = max(len(self.losses), 1)
        out = {"loss": sum(self.losses) / n, "samples_per_s": self.samples / dt, "step_time_s": dt / n}
        if self.grad_norms:
            out["grad_norm"] = sum(self.grad_norms) / len(self.grad_norms)
        out["loss_by_sigma"] = {k: sum(v) / len(v) for k, v in sorted(self.buckets.items())}
        return out


class RunLogger:
    """JSONL + TensorBoard + a rich progress bar, all no-ops on ranks other than 0."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool,
                 tensorboard: bool = True, progress: bool = True):
        self.enabled = enabled
        self.jsonl = None
        self.tb = None
        self.progress = None
        if not enabled:
            return
        from svdcli import runs

        self.jsonl = open(run_dir / runs.LOG, "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / runs.TENSORBOARD))
        if not progress:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), transient=False)
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, status="")
        self.progress.start()

    def step(self, step: int, status: str = "") -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=step, status=status)

    def log(self, step: int, record: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **record}) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, dict):
                    for sub, v in value.items():
                        self.tb.add_scalar(f"{key}/{sub}", v, step)
                elif isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, step)

    def event(self, step: int, kind: str, **fields) -> None:
        """A non-scalar event (checkpoint saved, shard skipped, NaN) in the JSONL log."""
        if self.enabled:
            self.jsonl.write(json.dumps({"step": step, "event": kind, **fields}) + "\n")

    def print(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tb is not None:
            self.tb.close()
        if self.jsonl is not None:
            self.jsonl.close()
