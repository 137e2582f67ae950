"""`svd curate ...`: the curation stages over Parquet manifests, one module per command."""
from __future__ import annotations

import importlib
import pkgutil

import typer

from svdcli.cli import curate_cmds

app = typer.Typer(help="Curate a video corpus into a Parquet manifest: one row per clip, one "
                       "column group per stage (cuts, motion, text, clip, caption, filter).",
                  no_args_is_help=True)

# Each command module in curate_cmds defines `register(app)` (helpers such as `options` do not);
# the order here is the order in --help.
_ORDER = ["cuts", "motion", "text", "clip", "caption", "filter", "run", "report"]
_present = {m.name for m in pkgutil.iter_modules(curate_cmds.__path__)}
for _name in [n for n in _ORDER if n in _present] + sorted(_present - set(_ORDER)):
    _module = importlib.import_module(f"svdcli.cli.curate_cmds.{_name}")
    if hasattr(_module, "register"):
        _module.register(app)
