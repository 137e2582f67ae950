"""The progress bar of a curation stage, drawn from the runner's reports (`StageProgress`).

One bar per stage run: tasks done of total (with what a task is), rows written less errors, the
errors so far, the rate of a stage that meters its output (caption: output tokens per second,
over every worker), time elapsed and left. A resumed run starts at the tasks already done. Keep this
module light: rich is imported when the first bar starts.
"""
from __future__ import annotations


class StageBars:
    """A callable for `progress=`: starts a rich bar at each stage's 'start', ends it at its 'end'."""

    def __init__(self):
        self._bar = None
        self._id = None

    def __call__(self, report) -> None:
        if report.event == "start":
            self._start(report)
        elif report.event == "end":
            self._stop()
        elif self._bar is not None:
            info = f"· {report.rows - report.errors} {report.row_unit} · {report.errors} errors"
            if report.meter_unit and report.seconds > 0:
                info += f" · {report.metered / report.seconds:,.0f} {report.meter_unit}/s"
            self._bar.update(self._id, completed=report.resumed + report.tasks, info=info)

    def _start(self, report) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._stop()
        self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn(report.unit), TextColumn("{task.fields[info]}"),
                             TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), transient=False)
        self._bar.__enter__()
        self._id = self._bar.add_task(report.describe, total=report.total, completed=report.resumed,
                                      info="(resumed)" if report.resumed else "")

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def stage_bars(enabled: bool) -> StageBars | None:
    """The `progress=` argument for a command's --progress/--no-progress."""
    return StageBars() if enabled else None
