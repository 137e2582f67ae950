"""Frames of one sample: which timestamps to take, resize + center crop, mp4 / npy bytes.

Shared by the packer (source video -> sample bytes) and the loader (sample bytes -> arrays),
so both sides agree on the encoding.
"""
from __future__ import annotations

import io
import math

import numpy as np

TIME_EPS = 1e-6


def sample_rate(source_fps: float, fps: float | None) -> float:
    """Frame rate a sample is stored at: `fps` when asked for, never faster than the source.

    A source slower than `fps` keeps its own rate, so no frame is ever repeated to fake motion.
    """
    if not fps or fps >= source_fps:
        return float(source_fps)
    return float(fps)


def sample_times(start: float, end: float, rate: float, max_frames: int) -> list[float]:
    """Timestamps start + k/rate for k = 0, 1, ... while < end (exclusive), at most max_frames."""
    n = max(0, math.ceil((end - start) * rate - TIME_EPS))
    return [start + k / rate for k in range(min(n, max_frames))]


def cover_size(width: int, height: int, out_h: int, out_w: int) -> tuple[int, int]:
    """(width, height) of the smallest same-aspect resize that covers out_h x out_w."""
    s = max(out_w / width, out_h / height)
    return max(out_w, round(width * s)), max(out_h, round(height * s))


def center_crop(frames: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Center crop (N, H, W, C) to (N, out_h, out_w, C)."""
    h, w = frames.shape[1:3]
    y0, x0 = (h - out_h) // 2, (w - out_w) // 2
    return frames[:, y0:y0 + out_h, x0:x0 + out_w]


def resize_crop(frames: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize (N, H, W, 3) uint8 to cover out_h x out_w (area filter), then center crop."""
    import cv2

    h, w = frames.shape[1:3]
    if (h, w) == (out_h, out_w):
        return frames
    cw, ch = cover_size(w, h, out_h, out_w)
    interp = cv2.INTER_AREA if cw < w else cv2.INTER_LINEAR
    resized = np.stack([cv2.resize(f, (cw, ch), interpolation=interp) for f in frames])
    return np.ascontiguousarray(center_crop(resized, out_h, out_w))


def rotate_display(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Apply the container's display rotation (degrees clockwise) to (N, H, W, C) frames."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frames, k=-k, axes=(1, 2))) if k else frames


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 18, preset: str = "veryfast") -> bytes:
    """(N, H, W, 3) uint8 RGB -> H.264 yuv420p mp4 bytes at `fps` (every frame a packet)."""
    from svdcli.video.write import write_frames

    # one encoder thread: parallelism comes from the shard workers
    return write_frames(io.BytesIO(), frames, fps, crf=crf, preset=preset, threads=1).getvalue()


def decode_mp4(data: bytes, stop: int | None = None) -> np.ndarray:
    """mp4 bytes -> (N, H, W, 3) uint8 RGB; with `stop`, only the first `stop` frames."""
    import av

    out = []
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        for frame in container.decode(stream):
            out.append(frame.to_ndarray(format="rgb24"))
            if stop is not None and len(out) >= stop:
                break
    if not out:
        raise ValueError("mp4 sample holds no decodable frames")
    return np.stack(out)


def encode_npy(frames: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(frames, dtype=np.uint8), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
