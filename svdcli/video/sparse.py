"""Sparse H.264 reading: gray frames at given times, decoding only the packets they depend on.

`read_gray_at` returns exactly what `read_frames_at(..., fmt='gray')` returns, faster, for
H.264 in MP4 (avcC), the common case; anything else falls back to `read_frames_at`.

Two kinds of packets are never sent to the decoder:
- frames that no other frame references (nal_ref_idc 0, most B-frames) and that no target
  shows (the demux scan gives every packet's PTS, so the frame shown at each target is known
  before decoding: the last one whose PTS is <= the target);
- the packets of a GOP that come (in decode order) after the last frame a target may show,
  up to the next IDR frame, and whole GOPs without a target: nothing after an IDR references
  what came before it, and nothing before it is shown after it. IDR positions come from a
  demux-only scan (`svdcli.video.gops.scan`).
For the same reason GOPs need nothing from each other: with `threads` > 1 (0: one per core),
runs of whole GOPs are read at once, each by its own one-thread decoder (`gops.read_runs`),
and their frames are handed over in order. A GOP that decodes with errors all the same sends
the rest of the read to `read_frames_at`. Where a
video has a single GOP (or the targets lie in one), one decoder reads it on `threads` FFmpeg
threads instead.
Frames are converted by `svdcli.video.gray.GrayConverter` (one reused swscale context).
`iter_gray_at` hands them over one by one as they are decoded, so a caller can work on the
first frames (motion scores pairs on other threads) while the decoders are still running.
"""
from __future__ import annotations

import bisect
import os
from typing import Iterator

import numpy as np

from svdcli.video.gops import EPS, Unsure, read_runs, runs, scan
from svdcli.video.h264 import avcc_length_size, is_disposable


def _shown_packets(pts: list[int], tb, targets: list[float]) -> set[int]:
    """PTS of the packet whose frame each target shows: the last one at or before it (the first
    packet for a target before every frame)."""
    order = sorted(set(pts))
    secs = [float(p * tb) for p in order]  # as the reader computes a frame's time
    return {order[max(0, bisect.bisect_right(secs, t + EPS) - 1)] for t in targets} if order else set()


def _dead_packets(pts: list[int], splits: list[int], tb, targets: list[float]) -> set[int]:
    """PTS of the packets no target needs: each GOP's packets after (in decode order) the last
    one a target may show, up to the next clean IDR; whole GOPs without a target."""
    dead: set[int] = set()
    secs = [p * float(tb) for p in pts]
    for s, k in zip([0] + splits, splits):  # the GOP of packets [s, k) ends where IDR k starts
        # the last target this GOP shows: before IDR k is shown, not before the GOP's first frame
        j = bisect.bisect_left(targets, secs[k] - EPS) - 1
        if j >= 0 and (s == 0 or targets[j] + EPS >= secs[s]):
            last = max((n for n in range(s, k) if secs[n] <= targets[j] + EPS), default=k - 1)
        else:
            last = s - 1  # no target in this GOP: skip all of it
        dead.update(pts[last + 1:k])
    return dead


def read_gray_at(path, times: list[float], size: tuple[int, int],
                 threads: int = 0) -> tuple[np.ndarray, list[float]]:
    """Gray (N, H, W) frames at sorted `times`, as `read_frames_at(..., fmt='gray')` returns them,
    and the time (s from the first frame) of each frame shown.

    For H.264 in MP4, packets of non-reference frames are decoded only where a target shows
    them; should a skipped frame turn out to be the answer after all (a packet whose frame does
    not carry its PTS), the rest of the read falls back to `read_frames_at`.
    """
    got = list(iter_gray_at(path, times, size, threads))
    if not got:
        return np.zeros((0, size[1], size[0]), np.uint8), []
    return np.stack([frame for frame, _ in got]), [shown for _, shown in got]


def iter_gray_at(path, times: list[float], size: tuple[int, int],
                 threads: int = 0) -> Iterator[tuple[np.ndarray, float]]:
    """`read_gray_at`'s answer one target at a time, in order, each (frame, time shown) as soon as
    it is decoded. A video that stops decoding part-way (cut off, damaged) raises a VideoError
    naming the last frame handed over, after the frames before it."""
    import av

    from svdcli.video.probe import VideoError
    from svdcli.video.seek import read_frames_at

    served, last = 0, None
    try:
        try:
            for item in _sparse_frames(path, times, size, threads):
                yield item
                served, last = served + 1, item[1]
            return
        except Unsure:  # every frame handed over so far was vouched for; the rest come from a full read
            pass
        if served < len(times):
            frames, shown = read_frames_at(path, times[served:], size=size, fmt="gray", threads=threads,
                                           with_times=True)
            yield from zip(frames, shown)
    except av.error.FFmpegError as exc:
        where = f"after the frame at {last:.3f} s" if served else "before the first frame asked for"
        raise VideoError(f"decoding failed {where} ({served} of {len(times)} frames read): {exc}") from exc


def _sparse_frames(path, times: list[float], size: tuple[int, int],
                   threads: int = 0) -> Iterator[tuple[np.ndarray, float]]:
    """(frame, its time) per target; raises Unsure (before any frame) where this reader cannot
    read the file (not H.264 in MP4), or at the first frame it cannot vouch for."""
    from svdcli.video.probe import use_decoder_threads, open_container
    from svdcli.video.seek import first_frame_time

    with open_container(path) as container:
        stream = container.streams.video[0]
        length_size = avcc_length_size(stream)
        if length_size is None:
            raise Unsure
        use_decoder_threads(stream, threads)
        origin = first_frame_time(container, stream)
        targets = [origin + t for t in times]
        pts, splits, _ = scan(container, stream, length_size)
        dead = _dead_packets(pts, splits, stream.time_base, targets)
        shown = _shown_packets(pts, stream.time_base, targets)
        readers = threads or os.cpu_count() or 1
        groups = runs(pts, splits, stream.time_base, targets, readers) if readers > 1 else []
        if len(groups) < 2:
            reader = _SparseReader(container, stream, length_size, targets, origin, size, dead, shown)
            while reader.i < len(reader.targets):
                yield from reader.decode_pass()
            return
    yield from read_runs(path, groups, min(readers, len(groups)),
                         lambda container, stream, lo, hi, start: _SparseReader(
                             container, stream, length_size, targets[lo:hi], origin, size, dead, shown, start),
                         name="sparse-read")


def _damaged(frame) -> bool:
    """FFmpeg concealed decoding errors in this frame."""
    return frame.is_corrupt


class _SparseReader:
    """Seek + decode passes over one stream, emitting the frame shown at each target time."""

    def __init__(self, container, stream, length_size: int, targets: list[float], origin: float,
                 size: tuple[int, int], dead: set[int], shown: set[int], start: int | None = None):
        from svdcli.video.gray import GrayConverter

        self.container, self.stream, self.length_size = container, stream, length_size
        self.targets, self.origin, self.dead, self.shown = targets, origin, dead, shown
        self.start = start  # PTS the first seek goes to (an IDR), else the first target's time
        self.on_its_own = start is not None  # a GOP read from its own seek: it must decode without errors
        self.tb = stream.time_base
        self.convert = GrayConverter(size)
        self.skipped: list[float] = []  # pts (s) of non-reference frames never decoded, sorted
        self.i = 0  # next target

    def decode_pass(self) -> Iterator[tuple[np.ndarray, float]]:
        """Seek to the next target's keyframe and decode until the end or a far target, handing
        over (frame, time shown) for each target passed."""
        from svdcli.video.seek import SEEK_GAP

        seeked_for, prev = self.i, None  # seek once per target: its keyframe may lie far before it
        at = int(max(self.targets[self.i] - self.origin, 0) / self.tb) + (self.stream.start_time or 0)
        at, self.start = (at if self.start is None else self.start), None
        self.container.seek(at, stream=self.stream, backward=True, any_frame=False)
        for packet in self.container.demux(self.stream):
            if self._skip(packet):
                continue
            for frame in packet.decode():
                if self.on_its_own and _damaged(frame):
                    raise Unsure
                yield from self._emit_before(float(frame.pts * self.tb), prev or frame)
                prev = frame
            if self.i == len(self.targets):
                return  # every target is served: the rest of the video is not needed
            if self.i == seeked_for or prev is None:
                continue
            if self.targets[self.i] - float(prev.pts * self.tb) > SEEK_GAP:
                return  # far target: seek instead of decoding through
        if prev is None:
            raise Unsure  # nothing decoded: let read_frames_at report the problem
        yield from self._emit_before(float("inf"), prev)  # end of stream: the rest show the last frame

    def _skip(self, packet) -> bool:
        if packet.pts is None or not packet.size:
            return False
        if packet.pts in self.dead:
            return True
        if packet.pts in self.shown or not is_disposable(packet, self.length_size):
            return False
        bisect.insort(self.skipped, float(packet.pts * self.tb))
        return True

    def _emit_before(self, t: float, shown) -> Iterator[tuple[np.ndarray, float]]:
        """Every target before time `t` shows `shown` (the last decoded frame before `t`)."""
        while self.i < len(self.targets) and t > self.targets[self.i] + EPS:
            shown_t = float(shown.pts * self.tb)
            k = bisect.bisect_right(self.skipped, shown_t + EPS)
            if k < len(self.skipped) and self.skipped[k] <= self.targets[self.i] + EPS:
                raise Unsure
            self.i += 1
            yield self.convert(shown), shown_t - self.origin
