"""`svd curate ...`: the curation stages over Parquet manifests, one module per command."""
from __future__ import annotations

import importlib
import pkgutil

import typer

from svdcli.cli import curate_cmds
from svdcli.curate import stages as registry

app = typer.Typer(help="Curate a video corpus into a Parquet manifest: one row per clip, one "
                       f"column group per stage ({', '.join(registry.NAMES)}).",
                  no_args_is_help=True)

# Each command module in curate_cmds defines `register(app)` (helpers such as `options` do not);
# in --help the stages come first, in the registry's order, then `run` and `report`, then the rest.
_ORDER = [*registry.NAMES, "run", "report"]
_present = {m.name for m in pkgutil.iter_modules(curate_cmds.__path__)}
for _name in [n for n in _ORDER if n in _present] + sorted(_present - set(_ORDER)):
    _module = importlib.import_module(f"svdcli.cli.curate_cmds.{_name}")
    if hasattr(_module, "register"):
        _module.register(app)
