"""The frames the model stages look at: sample times inside a clip, read in one pass per video.

Shared by text (first, middle and last frame, or a fixed rate), clip (first, middle, last) and
caption (the middle frame for CoCa, N frames spread evenly over the clip for a video
captioner). `read_clip_frames` decodes the frames of every clip of a task in one
pass over the video and isolates a clip whose frames cannot be read, so it fails alone.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from svdcli.errors import SvdError


def parse_frames(spec: str) -> float | None:
    """'fml' -> None (first, middle, last); 'Nfps' -> N frames per second."""
    if spec == "fml":
        return None
    try:
        rate = float(spec.removesuffix("fps"))
    except ValueError:
        rate = -1.0
    if not spec.endswith("fps") or rate <= 0:
        raise SvdError(f"--frames must be 'fml' (first, middle, last) or a rate like '1fps', not {spec!r}")
    return rate


def frame_times(clip: dict, spec: str = "fml") -> list[float]:
    """Sample times inside [start_time, end_time): first, middle and last frame, or a fixed rate."""
    start, end, fps = clip["start_time"], clip["end_time"], clip.get("fps") or 25.0
    eps = min(0.25 / fps, (end - start) / 4)  # inside the first frame, clear of timestamp rounding
    last = max(start + eps, end - 1.0 / fps + eps)
    rate = parse_frames(spec)
    if rate is None:
        return sorted({start + eps, (start + end) / 2, last})
    n = max(1, math.floor((end - start) * rate))
    return [start + eps + k / rate for k in range(n)]


def middle_time(clip: dict) -> float:
    return (clip["start_time"] + clip["end_time"]) / 2


def even_times(clip: dict, n: int) -> list[float]:
    """`n` timestamps spread evenly over the clip: the centres of n equal slices of
    [start_time, end_time), so n = 1 is the middle frame and no time falls on the clip's edges."""
    start, end = clip["start_time"], clip["end_time"]
    return [start + (k + 0.5) * (end - start) / n for k in range(n)]


def read_clip_frames(payload: dict, times: Callable[[dict], list[float]],
                     size: Callable[[dict], tuple[int, int]]) -> list[tuple[dict, np.ndarray | Exception]]:
    """Decode the frames every clip of a task needs, in one pass over the video when possible.

    Returns (clip, frames) pairs; a clip whose frames cannot be read gets the exception instead,
    so one bad clip does not fail its neighbours.
    """
    from svdcli.video.seek import read_frames_at

    clips = payload["clips"]
    wanted = [(t, i) for i, c in enumerate(clips) for t in times(c)]
    sizes = {size(c) for c in clips}
    if len(sizes) == 1:
        try:
            order = sorted(range(len(wanted)), key=lambda k: wanted[k][0])
            frames = read_frames_at(payload["video_path"], [wanted[k][0] for k in order], size=sizes.pop())
            per_clip: list[list[np.ndarray]] = [[] for _ in clips]
            for k, frame in zip(order, frames):
                per_clip[wanted[k][1]].append(frame)
            return [(c, np.stack(f)) for c, f in zip(clips, per_clip)]
        except Exception:  # noqa: BLE001 - fall back to clip by clip to isolate the bad one
            pass
    out = []
    for clip in clips:
        try:
            out.append((clip, read_frames_at(payload["video_path"], times(clip), size=size(clip))))
        except Exception as exc:  # noqa: BLE001 - recorded as this clip's error
            out.append((clip, exc))
    return out
