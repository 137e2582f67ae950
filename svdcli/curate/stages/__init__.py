"""The curation stages: the one place a stage is registered.

`NAMES` lists the stages in schema order (the order of their manifest columns, of the
`svd curate` commands in --help, and in which the filter looks for a stage error); the stage
named N is the module `svdcli.curate.stages.N`, which declares a `SPEC` (`StageSpec`: columns,
settings, bounds, checks, recipe placement, how a recipe runs it, report histograms, shard
scores). Everything else reads the specs from here: the manifest schema (its stage columns),
recipes, the report, the filter's error columns, `svd curate` and `svd pack`.

Importing this package is light (no stage module, no pyarrow), so the CLI reads `NAMES` at
start-up; a stage module is imported when its spec is first needed. Importing it also hands
the stage columns to the manifest schema (`svdcli.manifest.schema.COLUMNS`), loaded on first use.

`cuts_motion` is not a stage of its own: it is cuts and motion from one decode, which the recipe
runs when motion follows cuts.
"""
from __future__ import annotations

import importlib
import importlib.util
from functools import partial

from svdcli.manifest.schema import COLUMNS

NAMES = ("cuts", "motion", "text", "clip", "caption", "dedup", "filter")
MODULES = {name: f"{__name__}.{name}" for name in NAMES}  # where each stage's SPEC lives
_ADDED: dict = {}  # name -> StageSpec of the stages registered from elsewhere (`register`)


def available(name: str) -> bool:
    """Whether this version ships the stage's module (a registered stage in progress may not)."""
    return name in _ADDED or importlib.util.find_spec(MODULES[name]) is not None


def spec(name: str):
    """The `StageSpec` of a registered stage."""
    if name in _ADDED:
        return _ADDED[name]
    if name not in MODULES:
        raise KeyError(f"no stage {name!r}; stages are {', '.join(NAMES)}")
    return importlib.import_module(MODULES[name]).SPEC


def register(stage_spec) -> None:
    """Add a stage declared outside this package (a plug-in, a test's toy stage) after the others:
    its columns join the manifest schema, and recipes, the report, `svd pack` and `svd curate`
    (its command is built from the declaration) find it as they find a stage of `NAMES`."""
    global NAMES
    if stage_spec.name in NAMES:
        raise ValueError(f"stage {stage_spec.name!r} is registered already")
    _ADDED[stage_spec.name] = stage_spec
    NAMES = (*NAMES, stage_spec.name)
    COLUMNS.add_source(lambda: stage_spec.columns)


def unregister(name: str) -> None:
    """Remove a stage `register` added, and its columns."""
    global NAMES
    del _ADDED[name]
    NAMES = tuple(n for n in NAMES if n != name)
    COLUMNS.forget(name)


def specs() -> list:
    """The specs of every stage this version ships, in schema order."""
    return [spec(name) for name in NAMES if available(name)]


def stage_columns() -> list:
    """The manifest columns the stages add (after the clip columns), in schema order."""
    return [column for s in specs() for column in s.columns]


def histograms() -> list[tuple[str, str]]:
    """(column, axis label) of every score the report plots, in stage order."""
    return [h for s in specs() for h in s.histograms]


def score_columns() -> tuple[str, ...]:
    """The columns every shard sample carries in its json `scores`, in stage order."""
    return tuple(c for s in specs() for c in s.scores)


def _columns_of(name: str) -> list:
    return list(spec(name).columns) if available(name) else []


for _name in NAMES:  # one source per stage: a lookup of a cuts column imports no other stage
    COLUMNS.add_source(partial(_columns_of, _name))
