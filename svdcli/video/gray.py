"""Gray analysis frames: one conversion for every reader, and a store of one pass's frames.

`GrayConverter` is the single definition of an analysis frame (swscale gray, area resize, one
reused context: building a context costs more than converting a frame). The sparse reader and
`GrayFrameStore` both use it, so a frame looked up in the store is bit-identical to the one the
sparse reader returns for the same time.

`GrayFrameStore` keeps every frame of a decode pass at the analysis size (a `decode_once` frame
hook), for a stage that only learns after the pass which times it needs (motion scoring inside
the cut-detection pass: clip boundaries are known at the end). Frames go to a spooled temporary
file: in memory up to `max_memory` bytes, on disk beyond (a minute of 30 fps video at 256x144 is
66 MB; the file lives in $TMPDIR), gone when the store is closed. Past `max_bytes` (2 GB, about
30 minutes of such video) the store gives up, frees its file and says so (`overflowed`): the
caller then reads the frames it needs from the video instead.
"""
from __future__ import annotations

import bisect
import tempfile
from typing import Callable

import numpy as np

EPS = 1e-4  # seconds: the frame shown at t is the last one whose time is <= t + EPS


class GrayConverter:
    """PyAV frame -> (H, W) uint8 gray at `size` (width, height), area-resized by swscale."""

    def __init__(self, size: tuple[int, int]):
        from av.video.reformatter import VideoReformatter

        self.size = size
        self.reformatter = VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        w, h = self.size
        return self.reformatter.reformat(frame, w, h, "gray", interpolation="AREA").to_ndarray()


class GrayFrameStore:
    """Every frame fed to it, gray at the size `size_for(width, height)` of the first frame.

    Use as a `decode_once` frame hook (`store.feed`), then `frames_at(times)` after the pass.
    """

    def __init__(self, size_for: Callable[[int, int], tuple[int, int]], max_memory: int = 256 << 20,
                 max_bytes: int = 2 << 30):
        self.size_for = size_for
        self.file = tempfile.SpooledTemporaryFile(max_size=max_memory)
        self.max_bytes = max_bytes
        self.overflowed = False  # True once more than max_bytes were fed: nothing is kept
        self.convert: GrayConverter | None = None
        self.times: list[float] = []  # seconds from the first frame, increasing

    def feed(self, t: float, frame) -> None:
        """Keep `frame`, shown at `t` s from the first frame (`decode_once` computes `t` with the
        readers' arithmetic, so pair gaps, and thus scores, are bit-identical to theirs)."""
        if self.overflowed:
            return
        if self.convert is None:
            self.convert = GrayConverter(self.size_for(frame.width, frame.height))
        if self.times and t <= self.times[-1]:
            raise ValueError(f"frame times must increase: {t} after {self.times[-1]}")
        w, h = self.convert.size
        if (len(self.times) + 1) * w * h > self.max_bytes:
            self.overflowed = True
            self.file.close()  # frees the memory or deletes the file now
            self.times.clear()
            return
        self.file.write(self.convert(frame).tobytes())
        self.times.append(t)

    def frames_at(self, times: list[float]) -> tuple[np.ndarray, list[float]]:
        """(N, H, W) frames shown at `times` (s from the first frame) and the time of each.

        A time before the first frame gets the first frame, one after the last the last frame,
        as `svdcli.video.seek.read_frames_at` answers.
        """
        if self.convert is None or self.overflowed:
            raise ValueError("no frames stored" if self.convert is None else
                             f"the store gave up past {self.max_bytes} bytes; read the video instead")
        w, h = self.convert.size
        out = np.empty((len(times), h, w), np.uint8)
        shown = []
        for n, t in enumerate(times):
            k = max(0, bisect.bisect_right(self.times, t + EPS) - 1)
            self.file.seek(k * w * h)
            out[n] = np.frombuffer(self.file.read(w * h), np.uint8).reshape(h, w)
            shown.append(self.times[k])
        self.file.seek(0, 2)  # back to the end for further frames
        return out, shown

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> GrayFrameStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
