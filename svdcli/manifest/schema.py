"""Manifest columns: the `Column` type, the clip columns every manifest has, and the catalogue.

Every writer casts its table with `schema_for(columns)`, so a column means the same thing in
every file. The clip columns (where a clip is: video, times, frames, size) are defined here;
each curation stage declares the columns it adds in its own module, and the stage registry
(`svdcli/curate/stages/`) hands them to `COLUMNS` when it is imported, after these, in stage
order. Nothing here knows a stage. Bump MANIFEST_VERSION when a column changes meaning or
type; readers refuse newer versions and say so.

pyarrow is imported only where a type is needed, so the stage registry (read at CLI start-up)
can hand its columns in without importing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

MANIFEST_VERSION = 1
VERSION_KEY = b"svdcli.manifest_version"
HISTORY_KEY = b"svdcli.history"


@dataclass(frozen=True)
class Column:
    name: str
    type: object  # a pyarrow DataType
    stage: str  # the stage that writes it
    doc: str


# The clip columns (`svd curate cuts` writes them: where a clip is), named here and nowhere else:
# (name, pyarrow type, meaning), in schema order.
_CLIP = (
    ("clip_id", "string", "stable id: '<video_id>_<start_frame>_<end_frame>'"),
    ("video_id", "string", "first 16 hex digits of sha1 of the resolved video path"),
    ("video_path", "string", "absolute path of the source video"),
    ("start_time", "float64", "clip start, seconds from the first frame's PTS"),
    ("end_time", "float64", "clip end (exclusive), seconds"),
    ("start_frame", "int64", "first frame on the nominal frame grid (round(t * fps))"),
    ("end_frame", "int64", "end frame (exclusive) on the nominal frame grid"),
    ("num_frames", "int64", "end_frame - start_frame"),
    ("fps", "float64", "nominal frame rate of the video stream (r_frame_rate; the average rate where that is "
     "missing or above 120): the grid of start_frame/end_frame"),
    ("width", "int32", "coded width in pixels (before rotation)"),
    ("height", "int32", "coded height in pixels (before rotation)"),
    ("rotation", "int32", "display rotation from the container metadata: degrees clockwise to turn the coded "
     "frame upright (0, 90, 180, 270), as in the 'rotate' tag"),
    ("video_duration", "float64", "seconds from the first frame's PTS to the end of the last decoded frame "
     "(last PTS + 1/fps)"),
)
CLIP_COLUMNS = tuple(name for name, _, _ in _CLIP)
# where a clip is and on which frame grid: what reading a clip's frames needs (the scoring stages,
# the report's thumbnails, `svd pack`); a manifest from `svd curate cuts` has them all
CLIP_ON_GRID = ("clip_id", "video_path", "start_time", "end_time", "fps", "width", "height")
CLIP_LOCATION = tuple(c for c in CLIP_ON_GRID if c != "fps")  # the same, for readers that seek by time only
# what a scoring stage's task carries of each clip (the rest of the clip columns: video_id, video_duration)
CLIP_TASK_FIELDS = tuple(c for c in CLIP_COLUMNS if c not in ("video_id", "video_duration"))


def _clip_columns() -> list[Column]:
    import pyarrow as pa

    return [Column(name, getattr(pa, type_)(), "cuts", doc) for name, type_, doc in _CLIP]


class Catalogue(Mapping[str, Column]):
    """Every column a manifest may hold, in schema order: the clip columns, then the sources'.

    A source is a function returning columns, called once, in order, when a name is first looked
    up that the columns loaded so far do not hold (or when the whole catalogue is listed): a clip
    column is found without importing a stage module (~15 ms of a command's start-up).
    """

    def __init__(self, base: Callable[[], Iterable[Column]]):
        self._columns: dict[str, Column] = {}
        self._sources: list[Callable[[], Iterable[Column]]] = [base]
        self._loading = False

    def add_source(self, source: Callable[[], Iterable[Column]]) -> None:
        if source not in self._sources:
            self._sources.append(source)

    def _load(self, until: str | None = None) -> None:
        """Call the sources not called yet, in order: all of them, or until one declared `until`."""
        if self._loading:  # a source's columns are not all known before it returns
            raise RuntimeError("a manifest column was looked up while the column declarations load "
                               "(at the import of a stage module?)")
        self._loading = True
        try:
            while self._sources and (until is None or until not in self._columns):
                columns = list(self._sources[0]())
                self._sources.pop(0)  # only once loaded: a source that failed is tried again
                for column in columns:
                    known = self._columns.setdefault(column.name, column)
                    if known != column:
                        raise ValueError(f"column {column.name!r} is declared by stage {known.stage!r} "
                                         f"and again by stage {column.stage!r}")
        finally:
            self._loading = False

    def __getitem__(self, name: str) -> Column:
        if name not in self._columns:
            self._load(until=name)
        return self._columns[name]

    def __contains__(self, name: object) -> bool:
        if name not in self._columns:
            self._load(until=name if isinstance(name, str) else None)
        return name in self._columns

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(list(self._columns))

    def __len__(self) -> int:
        self._load()
        return len(self._columns)

    def forget(self, stage: str) -> None:
        """Drop the columns of a stage that is no longer registered (a test's toy stage)."""
        self._load()
        self._columns = {n: c for n, c in self._columns.items() if c.stage != stage}

    def position(self, name: str) -> int:
        self[name]
        return list(self._columns).index(name)


COLUMNS = Catalogue(_clip_columns)


def stage_columns(stage: str) -> list[str]:
    """Columns written by `stage`, in schema order."""
    return [c.name for c in COLUMNS.values() if c.stage == stage]


def schema_for(names: list[str]):
    """Arrow schema for these columns, in schema order; unknown names are an error."""
    import pyarrow as pa

    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise KeyError(f"columns not in the manifest schema: {unknown} (a stage declares its columns in "
                       "its module under svdcli/curate/stages/; they are known once svdcli.curate.stages "
                       "is imported)")
    return pa.schema([pa.field(n, COLUMNS[n].type) for n in sorted(names, key=COLUMNS.position)])
