"""Clips manifest rows as `svd curate cuts` writes them, for tests that start from a clips manifest."""
from __future__ import annotations

from pathlib import Path

from svdcli.video.probe import video_id


def clip_rows(path: str | Path, spans, fps: float, size: tuple[int, int], **extra) -> list[dict]:
    """One ok row per clip [a, b) of `spans` (frame indices) of the video at `path`, with the
    clip id cuts gives it; `extra`: further columns, the same in every row."""
    vid = video_id(path)
    return [dict(clip_id=f"{vid}_{a}_{b}", video_id=vid, video_path=str(path), start_time=a / fps,
                 end_time=b / fps, start_frame=a, end_frame=b, num_frames=b - a, fps=fps, width=size[0],
                 height=size[1], status="ok", **extra) for a, b in spans]
