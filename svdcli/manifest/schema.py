"""The one place manifest columns are defined: name, Arrow type, the stage that writes it, units.

Every writer casts its table with `schema_for(columns)`, so a column means the same thing in
every file. Bump MANIFEST_VERSION when a column changes meaning or type; readers refuse newer
versions and say so.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

MANIFEST_VERSION = 1
VERSION_KEY = b"svdcli.manifest_version"
HISTORY_KEY = b"svdcli.history"


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    stage: str
    doc: str


def _c(name: str, type_: pa.DataType, stage: str, doc: str) -> Column:
    return Column(name, type_, stage, doc)


_COLUMN_LIST = [
    # --- cuts: one row per clip (or one error row per unreadable video)
    _c("clip_id", pa.string(), "cuts", "stable id: '<video_id>_<start_frame>_<end_frame>'"),
    _c("video_id", pa.string(), "cuts", "first 16 hex digits of sha1 of the resolved video path"),
    _c("video_path", pa.string(), "cuts", "absolute path of the source video"),
    _c("start_time", pa.float64(), "cuts", "clip start, seconds from the first frame's PTS"),
    _c("end_time", pa.float64(), "cuts", "clip end (exclusive), seconds"),
    _c("start_frame", pa.int64(), "cuts", "first frame on the nominal frame grid (round(t * fps))"),
    _c("end_frame", pa.int64(), "cuts", "end frame (exclusive) on the nominal frame grid"),
    _c("num_frames", pa.int64(), "cuts", "end_frame - start_frame"),
    _c("fps", pa.float64(), "cuts", "nominal frame rate of the video stream (r_frame_rate; the "
       "average rate where that is missing or above 120): the grid of start_frame/end_frame"),
    _c("width", pa.int32(), "cuts", "coded width in pixels (before rotation)"),
    _c("height", pa.int32(), "cuts", "coded height in pixels (before rotation)"),
    _c("rotation", pa.int32(), "cuts", "display rotation from the container metadata: degrees clockwise "
       "to turn the coded frame upright (0, 90, 180, 270), as in the 'rotate' tag"),
    _c("video_duration", pa.float64(), "cuts", "seconds from the first frame's PTS to the end of the last "
       "decoded frame (last PTS + 1/fps)"),
    _c("start_levels", pa.list_(pa.string()), "cuts",
       "detector levels (e.g. 'native', '15fps', '8fps') that found the clip's start boundary; "
       "empty for a clip that starts at the video start or at a max-length split; 'transnetv2' "
       "when the learned detector found it (--detector transnetv2|both)"),
    _c("start_scores", pa.list_(pa.float32()), "cuts",
       "score of each of start_levels at that boundary, same order: native = PySceneDetect "
       "AdaptiveDetector ratio (frame change over its neighbours', >= 3 is a cut), 15fps/8fps = span "
       "ratio (change across the transition over the change within each side, >= 3), transnetv2 = "
       "transition probability (0..1)"),
    _c("start_cause", pa.string(), "cuts", "why the clip starts here: 'video_start', 'cut' or 'split'"),
    _c("status", pa.string(), "cuts", "'ok'; 'short' for a piece between two boundaries shorter than "
       "the cuts stage's min_length (kept as a row, never a clip); 'error' for an unreadable video"),
    _c("error", pa.string(), "cuts", "why the row is not a clip, when status is 'short' or 'error'"),
    # --- motion
    _c("motion_score", pa.float32(), "motion",
       "median over frame pairs (1/15 s apart, sampled at 2 fps) of the mean Farneback flow "
       "magnitude, in analysis pixels per 1/15 s; analysis size = long side 256 px, aspect kept "
       "(see svdcli/curate/stages/motion.py); the recipe drops clips below 0.25 as static"),
    _c("motion_pairs", pa.int32(), "motion", "number of frame pairs scored"),
    _c("motion_pair_scores", pa.list_(pa.float32()), "motion",
       "per-pair mean flow magnitudes (same units), in time order; a spike is a leftover cut"),
    _c("motion_error", pa.string(), "motion", "error message when motion could not be scored"),
    # --- text
    _c("text_area", pa.float32(), "text",
       "max over sampled frames (default first, middle, last) of (area of the union of "
       "detected text boxes / frame area), 0..1"),
    _c("text_detector", pa.string(), "text", "detector that produced text_area (craft or dbnet)"),
    _c("text_error", pa.string(), "text", "error message when text could not be scored"),
    # --- clip
    _c("aesthetic_score", pa.float32(), "clip",
       "LAION aesthetic head on the L2-normalised image embeddings of the first, middle and last "
       "frame, mean over the 3 frames (~1..10 for the improved MLP); null with --aesthetic none"),
    _c("clip_score", pa.float32(), "clip",
       "raw cosine(frame image embedding, caption text embedding), mean over the first, middle and "
       "last frame; null when the clip had no caption when the clip stage ran"),
    _c("clip_model", pa.string(), "clip",
       "'<open_clip model>:<pretrained tag or checkpoint file name>'; embeddings are in "
       "<manifest stem>.clip_embeddings.parquet"),
    _c("clip_error", pa.string(), "clip", "error message when embeddings could not be computed"),
    # --- caption
    _c("caption", pa.string(), "caption", "CoCa caption of the clip's middle frame"),
    _c("caption_model", pa.string(), "caption", "'<open_clip model>:<pretrained tag or checkpoint file name>'"),
    _c("caption_error", pa.string(), "caption", "error message when captioning failed"),
    # --- filter
    _c("keep", pa.bool_(), "filter", "true when the clip passed every rule"),
    _c("drop_reason", pa.string(), "filter", "what the clip failed, e.g. `motion_score < 0.25` (null when kept)"),
]

COLUMNS: dict[str, Column] = {c.name: c for c in _COLUMN_LIST}
STAGE_ORDER = ["cuts", "motion", "text", "clip", "caption", "filter"]


def stage_columns(stage: str) -> list[str]:
    """Columns written by `stage`, in schema order."""
    return [c.name for c in _COLUMN_LIST if c.stage == stage]


def schema_for(names: list[str]) -> pa.Schema:
    """Arrow schema for these columns, in schema order; unknown names are an error."""
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise KeyError(f"columns not in the manifest schema: {unknown} (add them to svdcli/manifest/schema.py)")
    order = {c.name: i for i, c in enumerate(_COLUMN_LIST)}
    return pa.schema([pa.field(n, COLUMNS[n].type) for n in sorted(names, key=order.__getitem__)])
