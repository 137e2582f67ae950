"""Options shared by the curation commands, declared once (a stage's own options come from its settings
dataclass, see stage_command.py).

Each is a `typing.Annotated` alias: the parameter's own default (where it has one) stays in the command's
signature, e.g. `workers: Workers = 1`. Keep this module light (typer and pathlib only): it is imported at
CLI start-up.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Manifest = Annotated[Path, typer.Option("--manifest", "-m",
                                        help="Input manifest (from `svd curate cuts` or a later stage).")]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output manifest (default: overwrite --manifest).")]

# Parallelism and sharding; the same for every scoring stage.
Workers = Annotated[int, typer.Option("--workers", "-j", min=1,
                                      help="Worker processes (one model each, in the stages that load one).")]
Rank = Annotated[int, typer.Option(min=0, help="This machine's share of a sharded run (0-based).")]
WorldSize = Annotated[int, typer.Option(min=1, help="Number of machines sharing the run.")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]

ExecutorName = Annotated[str, typer.Option("--executor", help="local: worker processes on this machine (--workers); "
                                           "ray: the tasks of a Ray cluster (see docs/scale.md).")]
RayAddress = Annotated[str, typer.Option("--ray-address", help="With --executor ray: auto (RAY_ADDRESS, or the "
                                         "cluster `ray start` made on this machine) or HOST:PORT of its head.")]

MaxErrorRate = Annotated[float, typer.Option(
    "--max-error-rate", min=0.0, max=1.0,
    help="Fail (exit 1, after writing every row) when more than this share of the inputs failed (0..1). "
         "Whatever it is, a run where no input gave a result exits 1.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="List every entry of the input folders that was "
                                       "skipped (not a video type, hidden, a broken link...), not only the counts.")]
