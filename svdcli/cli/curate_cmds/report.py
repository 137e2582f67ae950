"""`svd curate report`: an offline HTML page of plots and thumbnails for a manifest."""
from __future__ import annotations

from pathlib import Path

import typer

from svdcli.cli.common import console, user_errors

HELP = """Write a static HTML report (OUT/index.html + PNG plots + JPEG thumbnails) that opens from disk, offline: kept/dropped counts per reason, histograms of clip length, motion, text area, aesthetic and CLIP scores with the filter's thresholds drawn, and a contact sheet of kept and dropped clips grouped by reason."""


def register(app: typer.Typer) -> None:
    @app.command("report", help=HELP)
    @user_errors
    def report(
        manifest: Path = typer.Option(..., "--manifest", "-m", help="Manifest to report on (after filter for drop reasons)."),
        out: Path = typer.Option(..., "--out", "-o", help="Folder for index.html, plots/ and thumbs/."),
        per_group: int = typer.Option(12, min=0, help="Thumbnails per group (kept, each drop reason)."),
        max_thumbs: int = typer.Option(96, min=0, help="Thumbnails in all."),
    ) -> None:
        from svdcli.curate.report import write_report

        page = write_report(manifest, out, per_group=per_group, max_thumbs=max_thumbs)
        console().print(f"report: {page} (open it in a browser)")
