"""Helpers shared by the command modules: clean error exits, progress bars, timing lines."""
from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from typing import Callable

import typer


def fail(message: str, code: int = 2) -> None:
    """Print `message` as an error on one line (never wrapped: logs and scripts read it) and exit with
    `code`. The message is text, not markup: `pip install 'svdcli[train]'` and paths with brackets
    print as they are."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def lora_pairs(files: list, scales: list[float], flag: str) -> list[tuple]:
    """[(file, scale), ...] from repeated `flag` and --lora-scale options (scale 1.0 where not
    given); more scales than files is an error."""
    from svdcli.errors import SvdError

    if len(scales) > len(files):
        raise SvdError(f"{len(scales)} --lora-scale values for {len(files)} {flag} file(s)")
    return [(f, scales[i] if i < len(scales) else 1.0) for i, f in enumerate(files)]


def user_errors(fn: Callable) -> Callable:
    """Run a command with the exit codes the README promises: an SvdError (and an OS error about
    a path) is one line and exit 2 (RunFailed: 1), Ctrl-C exits 130 and SIGTERM 143, both after
    the same clean-up (finished work flushed), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from svdcli import interrupts
        from svdcli.errors import SvdError, Terminated
        from svdcli.outputs import os_error_line

        previous = interrupts.install()
        pyarrow_without_pandas()
        try:
            return fn(*args, **kwargs)
        except SvdError as exc:
            fail(str(exc), exc.exit_code)
        except FileNotFoundError as exc:
            fail(f"file not found: {exc.filename or exc}")
        except OSError as exc:  # a full disk, a read-only folder, a symlink loop...
            if exc.errno is None:
                raise
            fail(os_error_line(exc))
        except KeyboardInterrupt as exc:  # a Terminated may carry its own words (train: the checkpoint)
            what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
            print(f"\n{str(exc) or what + '; finished work is kept and a rerun resumes'}", file=sys.stderr)
            raise typer.Exit(143 if isinstance(exc, Terminated) else 130)
        finally:
            interrupts.restore(previous)

    return wrapper


def pyarrow_without_pandas() -> None:
    """Let pyarrow import pandas only when something asks it for pandas.

    pyarrow's first conversion of Python values (a `pa.array`, a scalar in a compute call)
    imports pandas to ask whether the values are pandas objects: ~0.15 s of a command's start-up,
    in a process that never holds one. With pandas hidden for that first check, pyarrow takes
    pandas as absent for such checks and imports it as usual the first time it is needed
    (`to_pandas`). For a command's process only (svdcli never passes pandas objects to pyarrow):
    a library user's may, so nothing imported from svdcli outside the CLI calls this. Values
    whose type pyarrow must infer still import pandas (its C++ side asks too): svdcli's
    conversions name their types (`svdcli.manifest.io.has_status`). Called as every command
    starts to run (not for its --help): most read or write manifests, shards or indexes.
    """
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    class HidePandas:
        def find_spec(self, name, path=None, target=None):
            if name == "pandas":
                raise ModuleNotFoundError("hidden from pyarrow's first check", name="pandas")
            return None

    finder = HidePandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([], type=pa.null())  # pyarrow's first check: is this a pandas object?
    finally:
        sys.meta_path.remove(finder)


def console():
    """stderr, as printed: a line is never wrapped (rich wraps at 80 columns where stderr is not a
    terminal, which broke paths in logs), ":name:" stays text (no emoji) and "[name]" too (no
    markup: rich took "[raw]" in an output path for a style and dropped it). A line that styles
    passes markup=True and escapes what it prints (`rich.markup.escape`)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False, markup=False)


def say(line: str) -> None:
    """One line of plain text on stderr, exactly as `console().print(line)` prints it, without
    loading rich for it where nothing else has (~25 ms of a command's end with --no-progress).
    rich expands tabs and drops control characters: a line that is not all printable goes
    through it."""
    if line.isprintable():
        print(line, file=sys.stderr)
    else:
        console().print(line)


@contextmanager
def step_bar(total: int, label: str = "sampling"):
    """A transient progress bar on stderr; yields the per-step callback a sampler calls."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), TextColumn("step {task.completed}/{task.total}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console(), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda state: bar.update(task, completed=state["i"] + 1)


def check_rank(rank: int, world_size: int) -> None:
    """A sharded run's rank must name one of its machines."""
    if rank >= world_size:
        raise typer.BadParameter(f"--rank {rank} must be below --world-size {world_size}")


def print_stage_result(stage: str, result, written, summary, max_error_rate: float = 1.0) -> None:
    """After a per-clip stage: its summary, or how far a sharded run is when others still work;
    then exit 1 when no clip was scored or more than `max_error_rate` of them failed.

    `summary` is a callable turning the written manifest path into the text to print.
    """
    if written is None:
        say(f"{stage}: {result.tasks_done}/{result.tasks_total} tasks done; the manifest is "
            "written when every rank has finished (rerun any rank to merge)")
        return
    say(summary(written))
    from svdcli.curate.outcome import check_outcome, outcome_of

    check_outcome(outcome_of(stage, written), max_error_rate)
