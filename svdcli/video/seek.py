"""Frames at given timestamps, decoded as little as possible and converted at the size asked for.

Times are seconds from the first frame of the video (the manifest's convention). The frame
shown at time t is the last frame whose PTS is <= t. Between far-apart timestamps we seek to
the preceding keyframe instead of decoding everything in between.
"""
from __future__ import annotations

import os

import numpy as np

from svdcli.video.probe import VideoError, use_decoder_threads, open_container

SEEK_GAP = 2.0  # seconds: decode forward through gaps shorter than this, seek across longer ones


def analysis_size(width: int, height: int, long_side: int, *, upscale: bool) -> tuple[int, int]:
    """(w, h) of the frames a stage analyses: the long side at `long_side`, aspect kept, both
    sides even (for the scaler); with `upscale=False` a smaller frame keeps its own size."""
    scale = long_side / max(width, height)
    if not upscale:
        scale = min(1.0, scale)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def first_frame_time(container, stream) -> float:
    """PTS (seconds) of the first decodable frame; streams may start at a non-zero PTS."""
    for frame in container.decode(stream):
        if frame.pts is not None:
            t = float(frame.pts * stream.time_base)
            break
    else:
        raise VideoError("no decodable video frames")
    container.seek(0, stream=stream, backward=True, any_frame=False)
    return t


def read_frames_at(path: str | os.PathLike, times: list[float], size: tuple[int, int] | None = None,
                   fmt: str = "rgb24", origin: float | None = None, threads: int = 0,
                   with_times: bool = False):
    """Return frames at `times` (sorted ascending) as uint8 (N, H, W, C) or (N, H, W) for gray.

    `size` is (width, height) for the conversion (swscale area resize), None keeps the coded
    size. `origin` is the PTS of the first frame if already known (saves a decode).
    With `with_times`, returns (frames, shown): `shown` holds the time (s from the first frame)
    of the frame returned for each target.
    """
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("times must be sorted ascending")
    out: list[np.ndarray] = []
    shown: list[float] = []
    with open_container(path) as container:
        stream = container.streams.video[0]
        use_decoder_threads(stream, threads)
        tb = stream.time_base
        if origin is None:
            origin = first_frame_time(container, stream)
        targets = [origin + t for t in times]
        i, prev, last_pos, seeked_for = 0, None, None, -1
        eps = 1e-4
        while i < len(targets):
            if last_pos is None or targets[i] - last_pos > SEEK_GAP:
                seeked_for = i  # seek at most once per target: the keyframe may lie far before it
                container.seek(int(max(targets[i] - origin, 0) / tb) + (stream.start_time or 0),
                               stream=stream, backward=True, any_frame=False)
                prev = None
            progressed = False
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb)
                last_pos = t
                progressed = True
                # emit `prev` for every target that falls before this frame
                while i < len(targets) and t > targets[i] + eps:
                    if prev is None:  # seek landed after the target: take this frame
                        prev = frame
                    out.append(_convert(prev, size, fmt))
                    shown.append(float(prev.pts * tb) - origin)
                    i += 1
                prev = frame
                if i == len(targets):
                    break  # every target is served: do not decode the rest of the video
                if i != seeked_for and targets[i] - t > SEEK_GAP:
                    break  # far target: seek instead of decoding through
            else:
                # end of stream: the remaining targets show the last frame
                while i < len(targets) and prev is not None:
                    out.append(_convert(prev, size, fmt))
                    shown.append(float(prev.pts * tb) - origin)
                    i += 1
                if i < len(targets):
                    raise VideoError(f"no frame at or before t={times[i]:.3f}s")
                break
            if not progressed:
                raise VideoError("decoder returned no frames")
    frames = np.stack(out) if out else np.zeros((0,), np.uint8)
    return (frames, shown) if with_times else frames


def _convert(frame, size, fmt) -> np.ndarray:
    if size is not None:
        return frame.to_ndarray(width=size[0], height=size[1], format=fmt, interpolation="AREA")
    return frame.to_ndarray(format=fmt)
