"""Stopping a training run on SIGTERM, as cluster schedulers ask before they kill a job.

The signal only raises a flag: the step in progress finishes, every rank agrees on the step to
stop after (an all-reduce of the flag, so a multi-process run saves one consistent checkpoint
whichever ranks got the signal), the checkpoint is saved as at any other step, and the run ends
with exit code 143. All of it is bounded: `timeout` seconds after the signal the process exits
143 whatever it is doing; a checkpoint cut off then is never named by `latest`, so --resume
takes the previous complete one. A second SIGTERM stops at once.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from svdcli.errors import Terminated

DEFAULT_TIMEOUT = 25.0  # seconds: under the 30 s SLURM (KillWait) and Kubernetes give by default


class StopOnSigterm:
    """While entered (on the main thread), SIGTERM asks the training loop to stop after its step."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, exit_now=os._exit):
        self.timeout, self.exit_now = timeout, exit_now
        self.requested = False
        self._previous = None
        self._timer: threading.Timer | None = None

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            raise Terminated("terminated (SIGTERM, twice): stopped without a new checkpoint; --resume continues "
                             "from the last complete one")
        self.requested = True
        self._timer = threading.Timer(self.timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        print(f"\nterminated (SIGTERM): no checkpoint within --stop-timeout {self.timeout:g} s; --resume continues "
              "from the last complete one", file=sys.stderr, flush=True)
        self.exit_now(143)

    def agreed(self, info) -> bool:
        """Whether any rank was asked to stop; a collective when there are several ranks."""
        if info.world_size == 1:
            return self.requested
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if self.requested else 0.0], device=info.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
