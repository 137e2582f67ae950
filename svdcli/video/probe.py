"""What a video file is: frame rate, size, rotation, start time and duration, from its headers."""
from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from svdcli.errors import SvdError


class VideoError(SvdError):
    """A video that cannot be opened or decoded; the message says why."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float  # nominal (average) frame rate
    width: int
    height: int
    rotation: int  # degrees, display rotation from container metadata
    start_time: float  # PTS of the stream start in seconds (0 for most files)
    duration: float  # seconds, from the stream or container header (may be approximate)
    frames: int  # frame count from the header, 0 when unknown
    codec: str

    def as_dict(self) -> dict:
        return asdict(self)


def video_id(path: str | os.PathLike) -> str:
    """Stable id of a video: sha1 of its resolved absolute path (its absolute path where links
    cannot be resolved: a loop), 16 hex digits."""
    try:
        resolved = str(Path(path).resolve())
    except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError on a symlink loop
        resolved = os.path.abspath(path)
    return hashlib.sha1(resolved.encode()).hexdigest()[:16]


def use_decoder_threads(stream, threads: int = 0, slices: int = 1) -> None:
    """Let FFmpeg decode `stream` on several threads: `threads` of them, or its own choice for 0.

    Pictures coded in several `slices` (what the first packet shows: `h264.slices_per_picture`)
    are decoded on slice threads, one per slice up to `threads` (or the cores): the parts of one
    picture at once, no frames in flight and nothing waiting on a reference. On 720p H.264 in 2
    slices a full decode takes 1.04 s wall / 1.84 CPU s on 2 slice threads against 1.29 s / 2.16 s
    on frame threads (FFmpeg's choice when it may pick, and what x264's single-slice default
    leaves). Everything else gets frame threads as FFmpeg chooses them.
    """
    if slices > 1:
        stream.thread_type = "SLICE"
        stream.thread_count = min(slices, threads or os.cpu_count() or 1)
        return
    stream.thread_type = "AUTO"
    if threads:
        stream.thread_count = threads


def open_container(path: str | os.PathLike):
    """Open with PyAV, turning every failure into a VideoError with a plain message."""
    import av

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise VideoError(_unreachable(path, exc)) from None
    if path.is_dir():
        raise VideoError(f"a folder, not a video: {path}")
    if size == 0:
        raise VideoError(f"empty file (0 bytes): {path}")
    try:
        container = av.open(str(path))
    except Exception as exc:  # PyAV raises av.error.* subclasses of OSError/ValueError
        why = getattr(exc, "strerror", None) or str(exc)
        raise VideoError(f"cannot open {path.name}: {why} (not a video, or one cut off or damaged)") from exc
    problem = not_a_video(container)
    if problem:
        container.close()
        raise VideoError(f"{path.name}: {problem}")
    return container


def _unreachable(path: Path, exc: OSError) -> str:
    import errno

    if exc.errno == errno.ELOOP:
        return f"symbolic link loop: {path}"
    if path.is_symlink():
        return f"broken symbolic link: {path} -> {os.readlink(path)}"
    if exc.errno == errno.ENOENT:
        return f"file not found: {path}"
    return f"cannot read {path}: {exc.strerror}"


def not_a_video(container) -> str | None:
    """Why an opened container is no video (an image, audio with a cover picture, audio only), or None.

    FFmpeg opens a PNG or JPEG under any name as a one-frame stream, and the cover art of an mp3
    or m4a as a video stream holding one picture: neither is a video with a length.
    """
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        return f"an image ({fmt.removesuffix('_pipe')}), not a video"
    if not container.streams.video:
        return "no video stream (audio only, or not a video)"
    if all(s.disposition & _attached_picture() for s in container.streams.video):
        return "no video stream, only a cover picture (an audio file)"
    return None


def _attached_picture() -> int:
    import av

    return int(av.stream.Disposition.attached_pic)


def stream_rotation(stream) -> int:
    """Display rotation in degrees (0, 90, 180, 270) from the stream's metadata or side data.

    PyAV 18 no longer exposes stream side data: there the display matrix is read from the
    first decoded frame instead (see `frame_rotation`); this returns 0 for such streams.
    """
    rotate = (stream.metadata or {}).get("rotate")
    if rotate is not None:
        try:
            return int(float(rotate)) % 360
        except ValueError:
            pass
    side = getattr(stream, "side_data", None)
    try:
        value = side.get("DISPLAYMATRIX") if side is not None else None
    except Exception:  # noqa: BLE001 - side data API differs across PyAV versions
        value = None
    if value is not None:
        try:
            return int(round(-float(value))) % 360
        except (TypeError, ValueError):
            pass
    return 0


def frame_rotation(frame) -> int:
    """Display rotation of a decoded frame, in the `rotate` tag's convention (clockwise degrees).

    FFmpeg reports the display matrix angle counter-clockwise (-90 for a `rotate=90` file).
    """
    angle = getattr(frame, "rotation", 0) or 0
    return int(round(-float(angle))) % 360


def picture_bytes(frame) -> int:
    """Bytes a decoded PyAV picture holds (its planes' buffers, line padding included)."""
    return sum(plane.buffer_size for plane in frame.planes)


def _first_frame_rotation(container, stream) -> int:
    try:
        for frame in container.decode(stream):
            return frame_rotation(frame)
    except Exception:  # noqa: BLE001 - a probe must not fail on a frame it only peeks at
        return 0
    return 0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's headers (no decoding)."""
    with open_container(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
        tb = stream.time_base
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if stream.duration is not None:
            duration = float(stream.duration * tb)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = 0.0
        ctx = stream.codec_context
        rotation = stream_rotation(stream) or _first_frame_rotation(container, stream)
        return VideoInfo(str(Path(path).resolve()), float(rate), int(ctx.width), int(ctx.height),
                         rotation, start, duration, int(stream.frames or 0),
                         ctx.name or "unknown")
