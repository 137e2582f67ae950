"""Gray analysis frames: one conversion for every reader, and a store of one pass's frames.

`GrayConverter` is the single definition of an analysis frame (swscale gray, area resize, one
reused context: building a context costs more than converting a frame). The sparse reader and
`GrayFrameStore` both use it, so a frame looked up in the store is bit-identical to the one the
sparse reader returns for the same time.

`GrayFrameStore` keeps the frames of a decode pass at the analysis size (a `decode_once` frame
hook), for a stage that only learns after the pass which times it needs (motion scoring inside
the cut-detection pass: clip boundaries are known at the end). Without a selector it converts
every frame. With one (`FrameSelector`: which frames will likely be wanted, decided a little
after they are decoded), it holds each decoded frame until the selector can tell, up to
`hold_bytes` of decoded pictures, and converts only those it wants: the others cost nothing,
and a time whose frame was not kept is the caller's to read from the file (`kept_at` says
which). Where the pass reads runs of GOPs on several threads, a reader that has decoded too far
ahead to hand over its pictures (~1.4 MB each at 720p) converts them with a converter of
`prepare`, and the store takes those gray frames instead. Every frame's time is recorded
either way, so the frame shown at any time is known.
Frames go to a spooled temporary file: in memory up to `max_memory` bytes, on disk beyond (a
minute of 30 fps video at 256x144 is 66 MB; the file lives in $TMPDIR), gone when the store is
closed. Past `max_bytes` (2 GB, about 30 minutes of such video) the store gives up, frees its
file and says so (`overflowed`): the caller then reads the frames it needs from the video instead.
"""
from __future__ import annotations

import bisect
import tempfile
from collections import deque
from typing import Callable, Protocol

import numpy as np

from svdcli.video.probe import picture_bytes

EPS = 1e-4  # seconds: the frame shown at t is the last one whose time is <= t + EPS


class GrayConverter:
    """PyAV frame -> (H, W) uint8 gray at `size` (width, height), area-resized by swscale.

    On one thread: the decoder and the pair scoring have the cores, and swscale's own threads
    (its default: one per core) cost more than they save on one small picture (1080p to 256x144:
    ~0.6 CPU ms a frame against ~0.7; the same pixels either way)."""

    def __init__(self, size: tuple[int, int]):
        from av.video.reformatter import VideoReformatter

        self.size = size
        self.reformatter = VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        w, h = self.size
        return self.reformatter.reformat(frame, w, h, "gray", interpolation="AREA", threads=1).to_ndarray()


class FrameSelector(Protocol):
    def wants(self, t: float, next_t: float) -> bool | None:
        """Whether the frame shown from `t` until `next_t` (inf for the last) will be wanted;
        None while that cannot be told yet."""

    def took(self, t: float, gray: np.ndarray) -> None:
        """The frame at `t` was converted and kept."""


class GrayFrameStore:
    """Frames fed to it, gray at the size `size_for(width, height)` of the first frame: every one,
    or those `select` wants.

    Use as a `decode_once` frame hook (`store.feed`), then `finish()` once the pass is over and
    `frames_at(times)` / `kept_at(times)`.
    """

    def __init__(self, size_for: Callable[[int, int], tuple[int, int]], max_memory: int = 256 << 20,
                 max_bytes: int = 2 << 30, select: FrameSelector | None = None, hold_bytes: int = 256 << 20):
        self.size_for = size_for
        self.file = tempfile.SpooledTemporaryFile(max_size=max_memory)
        self.max_bytes = max_bytes
        self.overflowed = False  # True once more than max_bytes were kept: nothing is kept
        self.size: tuple[int, int] | None = None  # (width, height) of the frames kept, from the first one
        self.convert: GrayConverter | None = None  # for pictures fed as decoded
        self.times: list[float] = []  # seconds from the first frame, increasing: every frame fed
        self.slots: list[int] = []  # where each frame is in the file; -1: not kept (yet)
        self.kept = 0
        self.select, self.hold_bytes = select, hold_bytes
        self.pending: deque = deque()  # (index, decoded picture or gray frame, bytes) waiting for the selector
        self.held = 0  # bytes held in `pending`

    def prepare(self, width: int, height: int) -> GrayConverter:
        """A converter for another thread (a GOP reader of `decode_once`): `feed` then takes its
        gray frames, the same pixels as the store would make, and holds them instead of pictures."""
        return GrayConverter(self.size_for(width, height))

    def feed(self, t: float, frame) -> None:
        """Take `frame`, shown at `t` s from the first frame: a decoded picture, or its gray frame
        from a converter of `prepare` (`decode_once` computes `t` with the readers' arithmetic,
        so pair gaps, and thus scores, are bit-identical to theirs)."""
        if self.overflowed:
            return
        if self.size is None:
            gray = isinstance(frame, np.ndarray)
            self.size = (frame.shape[1], frame.shape[0]) if gray else self.size_for(frame.width, frame.height)
        if self.times and t <= self.times[-1]:
            raise ValueError(f"frame times must increase: {t} after {self.times[-1]}")
        self.times.append(t)
        self.slots.append(-1)
        if self.select is None:
            self._keep(len(self.times) - 1, frame)
            return
        size = frame.nbytes if isinstance(frame, np.ndarray) else picture_bytes(frame)
        self.pending.append((len(self.times) - 1, frame, size))
        self.held += size
        self._settle()

    def finish(self) -> None:
        """The pass is over: decide every frame still held (kept where the selector cannot tell)."""
        self._settle(final=True)

    def _settle(self, final: bool = False) -> None:
        while self.pending and not self.overflowed:
            k, frame, size = self.pending[0]
            nxt = self.times[k + 1] if k + 1 < len(self.times) else (float("inf") if final else None)
            if nxt is None:
                return  # the next frame's time is needed to know when this one is shown
            wanted = self.select.wants(self.times[k], nxt)
            if wanted is None:
                if self.held <= self.hold_bytes and not final:
                    return
                wanted = True  # no room (or time) left to wait for the selector: keep it, as without one
            self.pending.popleft()
            self.held -= size
            if wanted:
                self._keep(k, frame)

    def _keep(self, k: int, frame) -> None:
        w, h = self.size
        if (self.kept + 1) * w * h > self.max_bytes:
            self.overflowed = True
            self.file.close()  # frees the memory or deletes the file now
            self.times.clear()
            self.slots.clear()
            self.pending.clear()
            return
        if isinstance(frame, np.ndarray):
            gray = frame
        else:
            self.convert = self.convert or GrayConverter(self.size)
            gray = self.convert(frame)
        self.file.write(gray.tobytes())
        self.slots[k] = self.kept
        self.kept += 1
        if self.select is not None:
            self.select.took(self.times[k], gray)

    def frames_at(self, times: list[float]) -> tuple[np.ndarray, list[float]]:
        """(N, H, W) frames shown at `times` (s from the first frame) and the time of each; every
        one of them must have been kept.

        A time before the first frame gets the first frame, one after the last the last frame,
        as `svdcli.video.seek.read_frames_at` answers.
        """
        frames, shown = self.kept_at(times)
        for t, frame, at in zip(times, frames, shown):
            if frame is None:
                raise ValueError(f"the frame shown at {t:.4f} s (at {at:.4f} s) was not kept")
        w, h = self.size
        return (np.stack(frames) if frames else np.empty((0, h, w), np.uint8)), shown

    def kept_at(self, times: list[float]) -> tuple[list[np.ndarray | None], list[float]]:
        """The frame shown at each of `times`, None where it was not kept, and the time of each."""
        if self.size is None or self.overflowed:
            raise ValueError("no frames stored" if self.size is None else
                             f"the store gave up past {self.max_bytes} bytes; read the video instead")
        w, h = self.size
        out: list[np.ndarray | None] = []
        shown = []
        for t in times:
            k = max(0, bisect.bisect_right(self.times, t + EPS) - 1)
            shown.append(self.times[k])
            if self.slots[k] < 0:
                out.append(None)
                continue
            self.file.seek(self.slots[k] * w * h)
            out.append(np.frombuffer(self.file.read(w * h), np.uint8).reshape(h, w))
        self.file.seek(0, 2)  # back to the end for further frames
        return out, shown

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> GrayFrameStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
