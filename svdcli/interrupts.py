"""Ctrl-C and SIGTERM: raised as exceptions where the work stands, held back where it cannot stop.

A command (cli/common.py `user_errors`) turns SIGINT into KeyboardInterrupt and SIGTERM into
Terminated (a KeyboardInterrupt), so both run the same clean-up: part files flushed, temp files
removed. A few steps must not be cut in half: starting a worker process (a spawned child whose
parent stops before handing it its task prints a traceback of its own). Inside `held()` a signal
is only noted, and raised when the block ends; the two signals are blocked there too, so a
worker started inside it begins with them blocked (a signal to the whole process group must not
kill it while it imports: the pool would be broken) until `in_worker` sets its handlers.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from svdcli.errors import Terminated

_held: list[int] | None = None  # signals noted inside `held()`, None outside it
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_CAN_BLOCK = hasattr(signal, "pthread_sigmask")


def _raise(signum: int, frame) -> None:
    if _held is not None:
        _held.append(signum)
        return
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def install() -> dict | None:
    """Raise on SIGINT and SIGTERM from now on; returns the handlers replaced (None off the main
    thread, where handlers cannot be set) for `restore`."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {s: signal.signal(s, _raise) for s in SIGNALS}


def restore(previous: dict | None) -> None:
    for signum, handler in (previous or {}).items():
        signal.signal(signum, handler)


@contextmanager
def held():
    """Note SIGINT / SIGTERM during the block and raise the first one at its end."""
    global _held
    if _held is not None:  # nested: the outer block raises
        yield
        return
    _held = []
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS) if _CAN_BLOCK else None
    try:
        yield
    finally:
        if mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal blocked meanwhile arrives now: noted
        noted, _held = _held, None
        if noted:
            _raise(noted[0], None)


# --- in worker processes ---------------------------------------------------------------------
_in_task = False


def in_worker() -> None:
    """A worker process's handlers: a SIGINT or SIGTERM sent to the whole process group (Ctrl-C in a
    terminal, a scheduler) stops the task in hand, whose exception goes back to the parent, which
    stops the run; an idle worker lets it pass and waits for the parent to end the pool (a worker
    that died of it would leave the pool broken, with threads failing noisily at exit)."""
    for signum in SIGNALS:
        signal.signal(signum, _in_worker)
    if _CAN_BLOCK:  # started inside `held()`: blocked until now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def _in_worker(signum: int, frame) -> None:
    if _in_task:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def task():
    """A worker's task: a signal now stops it."""
    global _in_task
    _in_task = True
    try:
        yield
    finally:
        _in_task = False
