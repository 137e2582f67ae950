"""`svd curate filter`: set keep / drop_reason from threshold and percentile rules."""
from __future__ import annotations

from pathlib import Path

import typer

from svdcli.cli.common import console, user_errors

HELP = """Mark clips to keep or drop with rules; rows are never deleted: every row gets `keep` (true/false) and `drop_reason` (the first reason that applies).

Rule grammar, one --rule per rule: 'COLUMN OP NUMBER' with OP one of >= > <= < == != (e.g. 'motion_score >= 0.25', 'text_area <= 0.07'), or a percentile over the whole manifest: 'COLUMN pct>= P' keeps values at or above the P-th percentile (drops the bottom P%), 'COLUMN pct<= P' keeps values at or below it (e.g. 'aesthetic_score pct>= 25', 'text_area pct<= 75').

Drop reasons, first that applies: 'error' (video failed in cuts), '<stage>_error' (e.g. motion_error), 'missing COLUMN', then what the clip failed: the first failing rule negated, e.g. 'motion_score < 0.25' for 'motion_score >= 0.25', 'aesthetic_score < p25' (below the 25th percentile) for 'aesthetic_score pct>= 25'."""


def register(app: typer.Typer) -> None:
    @app.command("filter", help=HELP)
    @user_errors
    def filter_(
        manifest: Path = typer.Option(..., "--manifest", "-m", help="Input manifest."),
        rules: list[str] = typer.Option(..., "--rule", "-r", help="A rule, e.g. 'motion_score >= 0.25'; repeat for more."),
        out: Path = typer.Option(None, "--out", "-o", help="Output manifest (default: overwrite --manifest)."),
    ) -> None:
        from svdcli.curate.stages.filter import run_filter

        written, counts, cutoffs = run_filter(manifest, rules, out)
        con = console()
        for rule, value in cutoffs.items():
            if "pct" in rule:
                con.print(f"  {rule}: cut-off {value:.4g}")
        total = sum(counts.values())
        for reason, n in counts.items():
            con.print(f"  {reason:<32} {n:>7}  ({100 * n / max(total, 1):.1f}%)")
        con.print(f"filter: kept {counts.get('kept', 0)} of {total} clips -> {written}")
