"""`svd curate cuts`: videos -> one manifest row per clip, from one decode per video.

The stage wraps the pure detector in `scorers/cascade.py`: a task is one video (key: its
resolved path); `process` decodes it once, feeding every level, turns the merged boundaries into
clips (trim, minimum length, max-length splits) and returns the rows. The runner does workers,
part files, resume and progress reports; `run_cuts` merges the parts into the manifest.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa

from svdcli.curate.parts import TASK_COLUMN, clean_parts
from svdcli.curate.runner import run_stage
from svdcli.curate.scorers.cascade import Boundary, Cascade, CascadeConfig, LevelSpec, default_levels
from svdcli.curate.stage import Resources, Stage, StageSpec, Task, gpus_for
from svdcli.errors import SvdError
from svdcli.manifest.schema import Column, stage_columns

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}


DETECTORS = ("cascade", "transnetv2", "both")

# after the clip columns every manifest has (svdcli/manifest/schema.py), which cuts writes too
COLUMNS = (
    Column("start_levels", pa.list_(pa.string()), "cuts",
           "detector levels (e.g. 'native', '15fps', '8fps') that found the clip's start boundary; empty for a "
           "clip that starts at the video start, at a max-length split or after a gap; 'transnetv2' when the learned "
           "detector found it (--detector transnetv2|both)"),
    Column("start_scores", pa.list_(pa.float32()), "cuts",
           "score of each of start_levels at that boundary, same order: native = PySceneDetect "
           "AdaptiveDetector ratio (frame change over its neighbours', >= 3 is a cut), 15fps/8fps = span ratio "
           "(change across the transition over the change within each side, >= 3), transnetv2 = transition "
           "probability (0..1)"),
    Column("start_cause", pa.string(), "cuts", "why the clip starts here: 'video_start', 'cut', 'split' or 'gap' "
           "(the first frame after a hole of over 1 s in the frame times: a paused recording, joined files)"),
    Column("status", pa.string(), "cuts", "'ok'; 'short' for a piece shorter than the cuts stage's min_length "
           "(kept as a row, never a clip; a readable video shorter than that is one 'short' row); 'error' for "
           "a file that is no readable video"),
    Column("error", pa.string(), "cuts", "why the row is not a clip, when status is 'short' or 'error'"),
)


@dataclass(frozen=True)
class CutsConfig:
    """Detection (`cascade`, and/or TransNetV2) plus how boundaries become clips; times in seconds.

    detector: 'cascade' (the native / 15 / 8 fps levels), 'transnetv2' (the learned detector
    alone) or 'both' (their union: a boundary either finds is a boundary).
    """

    cascade: CascadeConfig = field(default_factory=lambda: CascadeConfig(default_levels()))
    detector: str = "cascade"
    transnet_threshold: float = 0.5  # transition probability of a TransNetV2 boundary frame
    trim: float = 0.0  # dropped after and before every detected boundary (not at splits)
    min_length: float = 0.5  # shorter pieces (flashes, transition remnants) get status 'short'
    max_length: float = 0.0  # longer shots are split into equal parts no longer than this; 0 = off


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    cause: str  # video_start, cut or split
    scores: tuple[tuple[str, float], ...] = ()  # (level, score) of the boundary that starts it
    short: bool = False  # shorter than min_length: a row with status 'short', not a clip
    why: str = ""  # why a short row is no clip, where it is not its length


def segments(bounds: list[Boundary], end_time: float, frame_after, cfg: CutsConfig) -> list[Segment]:
    """Pieces between boundaries: trimmed, long ones split, short ones marked `short`.

    A piece ends (exclusive) at the frame after the old shot's last clean frame and starts at
    the new shot's first clean frame, so transition frames belong to no clip. Every boundary
    ends one piece and starts the next: nothing is merged away, so no clip spans a boundary.
    """
    starts = [(0.0, "video_start", ())] + [(b.first_new + cfg.trim, "cut", tuple(b.scores.items()))
                                           for b in bounds]
    ends = [(frame_after(b.last_old) or b.first_new) - cfg.trim for b in bounds] + [end_time]
    out = []
    for (start, cause, scores), end in zip(starts, ends):
        length = end - start
        if length <= 1e-9:
            continue  # a trim or a transition ate the whole piece: no frames to record
        if length < cfg.min_length:
            out.append(Segment(start, end, cause, scores, short=True))
            continue
        n = math.ceil(length / cfg.max_length - 1e-9) if cfg.max_length > 0 else 1
        edges = [start + i * length / n for i in range(n)] + [end]
        out.extend(Segment(a, b, cause, scores) if i == 0 else Segment(a, b, "split")
                   for i, (a, b) in enumerate(zip(edges, edges[1:])))
    return out


def split_at_gaps(segs: list[Segment], gaps: list[tuple[float, float]], fps: float,
                  min_length: float) -> list[Segment]:
    """Pieces without a hole in their frame times: a piece across a gap (a, b) (frames at a and
    at b, none between) ends one nominal frame after a, and what follows b starts a new piece
    (cause 'gap'), so no clip holds a frame frozen over the hole."""
    for a, b in gaps:
        hole_start = a + 1.0 / fps
        out = []
        for seg in segs:
            if seg.end <= hole_start + 1e-9 or seg.start >= b - 1e-9:
                out.append(seg)
                continue
            if seg.start < hole_start:
                out.append(Segment(seg.start, hole_start, seg.cause, seg.scores,
                                   short=seg.short or hole_start - seg.start < min_length))
            if seg.end > b:
                out.append(Segment(b, seg.end, "gap", short=seg.end - b < min_length))
        segs = out
    return segs


class CutsStage(Stage):
    """Task payload: a resolved video path. Rows: one per clip, or one error row."""

    name = "cuts"
    unit = "videos"
    row_unit = "clips"
    loaded = ("_network",)  # TransNetV2, loaded on a worker's first video

    def __init__(self, cfg: CutsConfig, threads: int = 0, device: str = "cpu", explain: str | None = None):
        self.cfg = cfg
        self.threads = threads  # decoder threads; speed only, so not part of the settings
        self.device = device  # where TransNetV2 runs; speed only
        self.explain = explain  # folder for one JSON per video: every candidate boundary and its verdict
        self._network = None
        self.columns = tuple(stage_columns("cuts"))

    def settings(self) -> dict:
        return asdict(self.cfg)

    def resources(self) -> Resources:
        learned = self.cfg.detector != "cascade"  # TransNetV2 loads its network once per worker
        return Resources(gpus=gpus_for(self.device) if learned else 0.0, loads_model=learned)

    def detector(self) -> Cascade:
        """A fresh detector for one video, as `cfg.detector` says."""
        cfg = self.cfg
        extra = []
        if cfg.detector in ("transnetv2", "both"):
            from svdcli.curate.scorers.transnet import TransNetLevel

            if self._network is None:  # loaded once per worker, not per video
                from svdcli.curate.scorers.transnet import load_network

                self._network = load_network(self.device)
            extra.append(TransNetLevel(cfg.transnet_threshold, self.device, network=self._network))
        levels = cfg.cascade if cfg.detector != "transnetv2" else CascadeConfig((), merge_tolerance=cfg.cascade.merge_tolerance)
        return Cascade(levels, extra)

    def process(self, payload: str, frame_hooks=(), cascade: Cascade | None = None, on_open=None) -> list[dict]:
        """Clip rows of one video; `frame_hooks` also get every decoded frame and `on_open` the
        frame rate (see decode_once); `cascade`: a fresh `detector()` the caller watches."""
        from svdcli.video.decode import decode_once
        from svdcli.video.probe import VideoError, video_id

        cascade = cascade or self.detector()
        info = decode_once(payload, cascade.consumers(), threads=self.threads, frame_hooks=frame_hooks,
                           on_open=on_open)
        if info.header_duration > 1.0 and info.end_time < 0.9 * info.header_duration:
            # frames stop well before the header's end: a cut-off file, not a short video
            raise VideoError(f"truncated or corrupt: frames end at {info.end_time:.2f} s of "
                             f"{info.header_duration:.2f} s")
        jumps = info.timestamps
        if jumps is not None and jumps.restarted:  # rows could not cover the frames after the jump
            raise VideoError(jumps.describe(info.frames))
        bounds = cascade.boundaries()
        if self.explain:
            write_explanation(Path(self.explain), payload, bounds, cascade.explain())
        segs = segments(bounds, info.end_time, cascade.frame_after, self.cfg)
        segs = split_at_gaps(segs, jumps.gaps if jumps else [], info.fps, self.cfg.min_length)
        if not segs:  # a row is needed all the same: it marks the video done
            segs = [Segment(0.0, info.end_time, "video_start", short=True,
                            why=f"no frame is --trim {self.cfg.trim:g} s away from every cut")]
        vid = video_id(payload)
        base = {"video_id": vid, "video_path": payload, "fps": info.fps, "width": info.width,
                "height": info.height, "rotation": info.rotation, "video_duration": info.end_time,
                "status": "ok", "error": None}
        rows = []
        for s in segs:
            f0, f1 = round(s.start * info.fps), round(s.end * info.fps)
            row = {**base, "clip_id": f"{vid}_{f0}_{f1}", "start_time": s.start, "end_time": s.end,
                   "start_frame": f0, "end_frame": f1, "num_frames": f1 - f0,
                   "start_levels": [k for k, _ in s.scores], "start_scores": [v for _, v in s.scores],
                   "start_cause": s.cause}
            if s.short:
                row.update(status="short", error=s.why or f"{s.end - s.start:.2f} s is below --min-length "
                                                          f"{self.cfg.min_length:g} s")
            rows.append(row)
        return rows

    def error_rows(self, payload: str, message: str) -> list[dict]:
        from svdcli.video.probe import video_id

        vid = video_id(payload)
        return [{"clip_id": f"{vid}_error", "video_id": vid, "video_path": payload, "start_levels": [],
                 "start_scores": [], "status": "error", "error": message}]

    def is_error(self, row: dict) -> bool:
        return row.get("status") == "error"


def write_explanation(folder: Path, video: str, bounds: list[Boundary], candidates: list[dict]) -> Path:
    """`folder/<video_id>.json`: the boundaries kept and every level's candidates with the
    transition gate's verdict and reason (`svd curate cuts --explain`), written atomically."""
    import json
    import os

    from svdcli.outputs import writing
    from svdcli.video.probe import video_id

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{video_id(video)}.json"
    record = {"video_path": video,
              "boundaries": [{"time": round(b.time, 4), "last_old": round(b.last_old, 4), "first_new": round(b.first_new, 4),
                              "gradual": b.gradual, "scores": b.scores} for b in bounds],
              "candidates": candidates}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with writing(target):  # a full disk is one line naming the file
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(target)
    return target


@dataclass
class InputScan:
    """What `svd curate cuts` found in its inputs: the videos, and what the folder scans passed
    over, (path, why) each, so nothing is left out without a word."""

    videos: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def skipped_line(self) -> str | None:
        """'skipped 3 entries of the input folders: 2 not a video type (.mp3, .txt), 1 hidden'."""
        if not self.skipped:
            return None
        counts: dict[str, int] = {}
        for _, why in self.skipped:
            counts[why] = counts.get(why, 0) + 1
        kinds = ", ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"skipped {len(self.skipped)} entries of the input folders: {kinds}"


def scan_inputs(inputs: list[str | Path]) -> InputScan:
    """Resolved paths of the given files and of the videos under the given folders (recursive),
    and every other entry of those folders that is not a plain subfolder, with the reason.

    A named file is kept whatever its extension or state, even a missing one: it becomes an
    error row, so the manifest says what happened to every input.
    """
    found: dict[str, None] = {}
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item).expanduser()
        if not path.is_dir():
            found[_absolute(path)] = None
            continue
        for p in sorted(path.rglob("*")):
            why = _not_a_video(p)
            if why is None:
                found[str(p.resolve())] = None
            elif why:
                skipped.append((str(p), why))
    return InputScan(list(found), skipped)


def find_videos(inputs: list[str | Path]) -> list[str]:
    """The videos `scan_inputs` finds."""
    return scan_inputs(inputs).videos


def _absolute(path: Path) -> str:
    try:
        return str(path.resolve())
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13): an error row says so
        return os.path.abspath(path)


def _not_a_video(p: Path) -> str | None:
    """Why a folder-scan entry is not taken as a video ('' for a plain subfolder), or None."""
    suffix = p.suffix.lower()
    if p.name.startswith("."):
        return "" if p.is_dir() else "hidden"
    if p.is_dir():
        return "folder named like a video" if suffix in VIDEO_EXTENSIONS else ""
    if not p.exists():
        return "broken link"
    if not p.is_file():
        return "not a regular file"
    return None if suffix in VIDEO_EXTENSIONS else f"not a video type ({suffix or 'no suffix'})"


@dataclass
class CutsSummary:
    videos: int
    clips: int
    errors: int
    seconds: float
    complete: bool
    out: Path
    short: int = 0  # pieces below min_length (rows with status 'short')
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) the folder scans passed over


def run_cuts(inputs: list[str | Path], out: Path, cfg: CutsConfig, *, workers: int = 1, rank: int = 0,
             world_size: int = 1, progress=None, executor=None, threads: int = 0,
             device: str = "cpu", explain: str | Path | None = None) -> CutsSummary:
    """Detect clips in every video and write the manifest `out` (resuming an interrupted run);
    `explain`: a folder for each video's candidate boundaries and the verdicts on them."""
    scan = find_videos_or_fail(inputs)
    videos = scan.videos
    stage = CutsStage(cfg, decoder_threads(threads, workers), device, str(explain) if explain else None)
    table, summary = run_video_stage(stage, videos, out, workers=workers, rank=rank, world_size=world_size,
                                     progress=progress, executor=executor)
    summary.skipped = scan.skipped
    if table is None:
        return summary
    write_cuts_manifest(table, out, cfg, inputs, len(videos))
    clean_parts(out, stage)
    return summary


def find_videos_or_fail(inputs: list[str | Path]) -> InputScan:
    scan = scan_inputs(inputs)
    if not scan.videos:
        passed = f"; {scan.skipped_line()}" if scan.skipped else ""
        raise SvdError(f"no videos found in {', '.join(map(str, inputs))} "
                       f"(looked for {', '.join(sorted(VIDEO_EXTENSIONS))}){passed}")
    return scan


def decoder_threads(threads: int, workers: int) -> int:
    """`threads` if given; else one worker decodes with every core and several share them."""
    from svdcli.curate.executors.local import cores_per_worker

    return threads or (0 if workers <= 1 else cores_per_worker(workers))


def run_video_stage(stage: CutsStage, videos: list[str], out: Path, **run_kwargs):
    """Run a stage with one task per video: (rows of this run's videos sorted, summary); the
    table is None while the run is incomplete (interrupted, or other ranks still working)."""
    import pyarrow.compute as pc

    from svdcli.manifest.io import has_status

    result = run_stage(stage, [Task(v, v) for v in videos], out, flush_rows=512, flush_seconds=5.0,
                       describe=stage.name, **run_kwargs)
    if not result.complete:
        return None, CutsSummary(result.tasks_done, result.rows - result.errors, result.errors,
                                 result.seconds, False, Path(out))
    table = result.tables[0]
    # parts of an interrupted run over other inputs may share the folder: keep this run's videos
    ours = pc.is_in(table.column(TASK_COLUMN), pa.array(videos, type=pa.string()))
    table = table.filter(ours).drop_columns([TASK_COLUMN])
    table = table.sort_by([("video_path", "ascending"), ("start_time", "ascending")])
    errors = pc.sum(has_status(table, "error")).as_py() or 0
    clips = pc.sum(has_status(table, "ok")).as_py() or 0
    return table, CutsSummary(len(videos), clips, errors, result.seconds, True, Path(out), table.num_rows - clips - errors)


def write_cuts_manifest(table, out: Path, cfg: CutsConfig, inputs: list[str | Path], videos: int) -> None:
    """The cuts manifest with its history record (the cuts columns of `table`)."""
    from svdcli.manifest.io import write_manifest

    stage = CutsStage(cfg)
    table = table.select([c for c in table.column_names if c in stage.columns])
    record = {"stage": "cuts", "settings": stage.settings(), "fingerprint": stage.fingerprint(),
              "inputs": [str(i) for i in inputs], "videos": videos}
    write_manifest(table, out, record=record)


def parse_levels(levels: str, thresholds: str | None) -> tuple[LevelSpec, ...]:
    """`native,15,8` (+ optional `3,3,3`) -> level specs, finest first."""
    from svdcli.curate.scorers.cascade import default_span, default_threshold, level_name

    rates: list[float | None] = []
    for item in [x.strip() for x in levels.split(",") if x.strip()]:
        try:
            rates.append(None if item == "native" else float(item.removesuffix("fps")))
        except ValueError:
            raise SvdError(f"--levels: {item!r} is not 'native' or a rate in fps") from None
        if rates[-1] is not None and not 0 < rates[-1] <= 120:
            raise SvdError(f"--levels: rates must be in (0, 120] fps, got {item!r}")
    if not rates and levels.strip():
        raise SvdError("--levels: give at least one level, e.g. native,15,8")
    if len(set(rates)) != len(rates):
        raise SvdError(f"--levels: {levels!r} names a level twice")
    values = [default_threshold(r) for r in rates]
    if thresholds:
        try:
            values = [float(x) for x in thresholds.split(",")]
        except ValueError:
            raise SvdError(f"--thresholds: {thresholds!r} is not a comma-separated list of numbers") from None
        if len(values) != len(rates):
            raise SvdError(f"--thresholds: {len(values)} values for {len(rates)} levels")
        if any(v <= 1.0 for v in values):
            raise SvdError(f"--thresholds: {thresholds!r}: every ratio must be above 1")
    specs = [LevelSpec(level_name(r), r, v, default_span(r)) for r, v in zip(rates, values)]
    return tuple(sorted(specs, key=lambda s: -(s.rate or math.inf)))


def cuts_config(levels: str = "native,15,8", thresholds: str | None = None,
                detector: str = CutsConfig.detector, transnet_threshold: float = CutsConfig.transnet_threshold,
                merge_tolerance: float = CascadeConfig.merge_tolerance, trim: float = CutsConfig.trim,
                min_length: float = CutsConfig.min_length, max_length: float = CutsConfig.max_length) -> CutsConfig:
    """The stage's settings as `svd curate cuts` and recipes spell them -> a checked CutsConfig."""
    if detector not in DETECTORS:
        raise SvdError(f"--detector {detector!r}: choose one of {', '.join(DETECTORS)}")
    numbers = {"--transnet-threshold": transnet_threshold, "--merge-tolerance": merge_tolerance,
               "--trim": trim, "--min-length": min_length, "--max-length": max_length}
    for name, value in numbers.items():
        try:
            numbers[name] = float(value)
        except (TypeError, ValueError):
            raise SvdError(f"{name} {value!r} is not a number") from None
        if numbers[name] < 0:
            raise SvdError(f"{name} {value!r} must not be negative")
    if not 0 < numbers["--transnet-threshold"] < 1:
        raise SvdError(f"--transnet-threshold {transnet_threshold!r} must be between 0 and 1")
    if numbers["--max-length"] and numbers["--max-length"] < numbers["--min-length"]:
        raise SvdError(f"--max-length {max_length} is below --min-length {min_length}")
    cascade = CascadeConfig(parse_levels(str(levels), thresholds and str(thresholds)),
                            merge_tolerance=numbers["--merge-tolerance"])
    if detector != "transnetv2" and not cascade.levels:
        raise SvdError("--levels: give at least one level, e.g. native,15,8")
    return CutsConfig(cascade, detector=detector, transnet_threshold=numbers["--transnet-threshold"],
                      trim=numbers["--trim"], min_length=numbers["--min-length"],
                      max_length=numbers["--max-length"])


def recipe_step(src: Path, out: Path, settings: dict, opts) -> str | None:
    """The cuts step of a recipe: None once its manifest is written, else how far all ranks are."""
    summary = run_cuts([src], out, cuts_config(**settings), **opts.stage_kwargs())
    return None if summary.complete else f"{summary.videos} videos"


SPEC = StageSpec(
    name="cuts",
    columns=COLUMNS,
    config=cuts_config,  # the settings as `svd curate cuts` spells them
    run=recipe_step,
    bounds=("transnet_threshold > 0", "transnet_threshold < 1", "merge_tolerance >= 0", "trim >= 0",
            "min_length >= 0", "max_length >= 0"),
    check=lambda settings: cuts_config(**settings),  # the checks `svd curate cuts` runs on its options
    first="makes the clips",
)
