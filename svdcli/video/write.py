"""Encoding frames to H.264 mp4 with PyAV: to a file (tests, demo, `svd sample`) or to bytes (shards)."""
from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_frames(target: str | Path | io.BytesIO, frames: np.ndarray, fps: float | Fraction, crf: int = 20,
                 codec: str = "libx264", gop: int | None = None, pix_fmt: str = "yuv420p",
                 preset: str = "veryfast", threads: int = 0,
                 options: dict[str, str] | None = None) -> str | Path | io.BytesIO:
    """Encode (N, H, W, 3) uint8 RGB frames into a path (container from its suffix) or an mp4 buffer.

    `threads` 0 lets the encoder choose; 1 suits callers that parallelise over processes.
    `options` go to the encoder after these (`{"x264-params": "slices=3"}`).
    """
    import av

    if not isinstance(target, io.IOBase):
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    buffer = isinstance(target, io.IOBase)  # a buffer has no suffix to infer the container from
    with av.open(target if buffer else str(target), "w", format="mp4" if buffer else None) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        if threads:
            stream.thread_count = threads
        opts = {"crf": str(crf), "preset": preset}
        if gop:
            opts["g"] = str(gop)
        stream.options = opts | (options or {})
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return target
