"""`svd curate ...`: the curation stages over Parquet manifests. Commands are added per stage."""
from __future__ import annotations

import typer

app = typer.Typer(help="Curate a video corpus into a Parquet manifest: one row per clip, one "
                       "column group per stage (cuts, motion, text, clip, caption, filter).",
                  no_args_is_help=True)
