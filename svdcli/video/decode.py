"""Decode a video once and feed every frame, converted once, to several consumers.

Decoding dominates the cost of frame analysis, so stages that look at the same video at
different rates (the cut-detection cascade, for one) share a single pass: FFmpeg decodes with
its own threads (slice threads where pictures are coded in several slices, frame threads
otherwise: `probe.use_decoder_threads`), each frame is converted once to a small analysis
array, and every consumer gets `(t, array)` where `t` is seconds from the first frame's PTS.
Consumers pick the frames they want by timestamp; nothing here counts frames.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from svdcli.video.probe import VideoError, use_decoder_threads, frame_rotation, open_container, stream_rotation

ANALYSIS_WIDTH = 64  # pixels: enough to see a cut, coarse enough to damp motion, free next to decoding
OVERSAMPLE = 2  # bilinear to this many times the analysis size, then area-average down
READ_AHEAD = 16  # decoded frames the decoder may run ahead of the analysis (read_ahead)
EIGHT_BIT_YUV = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"}
GAP_SECONDS = 1.0  # a step between frame times longer than this (and 3 frames) is a hole in the video


class FrameConsumer(Protocol):
    def feed(self, t: float, frame: np.ndarray) -> None:
        """Receive one decoded frame at `t` seconds from the first frame."""


@dataclass(frozen=True)
class DecodeResult:
    """What one pass learned about the stream (times from PTS, not from the header)."""

    frames: int  # frames decoded
    first_pts: float  # seconds, PTS of the first decoded frame (non-zero for delayed starts)
    last_time: float  # seconds from the first frame to the last decoded frame
    fps: float  # nominal (average) frame rate; the frame grid of the manifest
    width: int
    height: int
    rotation: int  # degrees clockwise to display upright
    header_duration: float  # seconds, from the stream/container header (0 when unknown)
    timestamps: TimestampCheck | None = None  # where frame times went back or leapt forward

    @property
    def end_time(self) -> float:
        """End of the last frame (exclusive), assuming it lasts one nominal frame."""
        return self.last_time + 1.0 / self.fps


@dataclass
class TimestampCheck:
    """Where a stream's frame times stop rising steadily; O(1) per frame.

    Times that go back (two files joined end to end, an encoder restarted) make every frame
    after the jump unplaceable: `see` drops them, `dropped` counts them and `back` keeps the
    first step back (frame number, time before, time after). Forward leaps longer than
    GAP_SECONDS and 3 nominal frames (a paused recording, joined files whose clocks ran on) are
    `gaps`, (time before, time after) each: frames exist on both sides, none in between.
    """

    fps: float
    dropped: int = 0
    back: tuple[int, float, float] | None = None
    largest_back: float = 0.0  # seconds
    gaps: list[tuple[float, float]] = field(default_factory=list)

    def see(self, index: int, last: float | None, t: float) -> bool:
        """Check frame `index` at `t` after a kept frame at `last`: False when it must be dropped
        (its time is not after the previous frame's)."""
        if last is None:
            return True
        step = t - last
        if step <= 0:
            self.dropped += 1
            self.back = self.back or (index, last, t)
            self.largest_back = max(self.largest_back, -step)
            return False
        if step > max(GAP_SECONDS, 3.0 / self.fps):
            self.gaps.append((last, t))
        return True

    @property
    def restarted(self) -> bool:
        """More than a stray duplicate: the times went back by over two frames, or more than two
        frames had to be dropped."""
        return self.dropped > 2 or self.largest_back > 2.0 / self.fps

    def describe(self, frames: int) -> str:
        index, before, after = self.back or (0, 0.0, 0.0)
        return (f"timestamps go back from {before:.2f} s to {after:.2f} s at frame {index} ({self.dropped} of "
                f"{frames + self.dropped} frames cannot be placed in time: files joined end to end?); split the "
                "file at the jump or remux it with continuous timestamps")


def yuv_analysis_size(width: int, height: int, target_width: int = ANALYSIS_WIDTH) -> tuple[int, int]:
    """(w, h) of the `yuv_analysis` arrays cut detection reads: `target_width` wide (never
    upscaled), aspect kept. Not `seek.analysis_size`: these arrays only need to show a cut."""
    w = min(width, target_width)
    h = max(2, round(height * w / max(width, 1)))
    return w, h


def yuv_analysis(frame, size: tuple[int, int]) -> np.ndarray:
    """(3, h, w) uint8 Y, U, V planes resized to one `size` grid (area averaging).

    8-bit planar YUV (nearly every H.264/HEVC file) is read straight from the decoder's planes
    and resized with OpenCV in two steps: bilinear to 2x the target, then area averaging. On
    720p that is within 1 grey level of a full area resize at a fifth of its cost (4x: 0.2
    levels at 60%; detections were the same on every test clip), and far cheaper than an
    swscale conversion of the full frame; other pixel formats go through swscale.
    """
    import cv2

    w, h = size
    if frame.format.name not in EIGHT_BIT_YUV:
        return frame.to_ndarray(width=w, height=h, format="yuv444p", interpolation="AREA")
    out = np.empty((3, h, w), np.uint8)
    for i, plane in enumerate(frame.planes[:3]):
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width]
        if plane.width > OVERSAMPLE * w and plane.height > OVERSAMPLE * h:
            rows = cv2.resize(rows, (OVERSAMPLE * w, OVERSAMPLE * h), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.resize(rows, (w, h), interpolation=cv2.INTER_AREA)
    return out


def decode_once(path: str | os.PathLike, consumers: Iterable[FrameConsumer], *,
                convert: Callable | None = None, size: tuple[int, int] | None = None,
                threads: int = 0, frame_hooks: Iterable[Callable] = (),
                on_open: Callable[[float], None] | None = None) -> DecodeResult:
    """Decode every frame of the first video stream once, feeding each consumer in turn.

    `convert(frame, size)` makes the analysis array (default: `yuv_analysis` at
    `yuv_analysis_size`); `threads` = 0 lets FFmpeg choose. Each of `frame_hooks` is called as
    `hook(t, frame)` with the decoded PyAV frame, for work that needs more than the analysis
    array (motion scoring in the same pass keeps gray frames); `on_open(fps)` learns the nominal
    frame rate before the first frame. Raises VideoError for files that cannot be opened, hold
    no decodable frames, or fail part-way (with the time reached).

    Skipping H.264's deblocking filter would save ~15% but makes reference frames drift until
    the next keyframe, which showed up as a false cut on a real clip: every frame is decoded
    exactly.
    """
    import av

    consumers, hooks = list(consumers), list(frame_hooks)
    convert = convert or yuv_analysis
    with open_container(path) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = nominal_rate(stream)
        if on_open is not None:
            on_open(fps)
        size = size or yuv_analysis_size(ctx.width, ctx.height)
        tb = stream.time_base  # exact: times are float(pts * tb) - first, as the frame readers compute them
        first = last = None
        n, rotation = 0, stream_rotation(stream)
        check = TimestampCheck(fps)
        # each frame is converted on the read-ahead thread as it comes out of the decoder: some of
        # its pixels are still in the cache (720p: ~200 us a frame, ~230 us when converted later)
        converted = ((frame, convert(frame, size)) for frame in _decoded(container, stream, threads))
        try:
            for frame, array in read_ahead(converted, READ_AHEAD):
                if frame.pts is None:  # rare (broken muxing): place it one nominal frame on
                    if last is None:
                        continue  # nothing to place it after yet
                    t = last + 1.0 / fps
                else:
                    if first is None:
                        first = float(frame.pts * tb)
                        rotation = rotation or frame_rotation(frame)
                    t = float(frame.pts * tb) - first
                if not check.see(n + check.dropped, last, t):
                    continue  # duplicate or out-of-order PTS: keep times strictly increasing
                for hook in hooks:
                    hook(t, frame)
                for consumer in consumers:
                    consumer.feed(t, array)
                last, n = t, n + 1
        except av.error.FFmpegError as exc:
            where = f"after {n} frames (t={last:.3f}s)" if n else "before the first frame"
            raise VideoError(f"decoding failed {where}: {exc}") from exc
        if n == 0:
            raise VideoError("no decodable video frames")
        header = _header_duration(container, stream)
        return DecodeResult(n, float(first or 0.0), float(last), fps, int(ctx.width), int(ctx.height),
                            rotation, header, check)


def _decoded(container, stream, threads: int) -> Iterator:
    """`container.decode(stream)`, its decoder threads chosen from the first packet (slice threads
    for pictures coded in several slices) before the decoder opens on it."""
    from svdcli.video.h264 import slices_per_picture

    chosen = False
    for packet in container.demux(stream):
        if not chosen and packet.size:
            use_decoder_threads(stream, threads, slices_per_picture(stream, packet))
            chosen = True
        yield from packet.decode()


def read_ahead(frames: Iterable, depth: int, chunk: int = 4) -> Iterator:
    """The items of `frames`, pulled by a helper thread up to `depth` ahead of the caller.

    FFmpeg's frame threads decode only a few frames beyond the one the caller holds: while
    the caller analyses a frame, or waits for a core on a busy machine, they stop. Pulling
    frames on another thread (PyAV leaves the GIL while FFmpeg decodes) keeps them decoding.
    Items travel in lists of `chunk`: one hand-over per frame costs more than the analysis
    saves. An exception of the producer is raised in the caller, after the items before it;
    stopping early (the caller's error, a `break`) stops the helper before the container can
    close under it.
    """
    import queue
    import threading

    if depth <= 0:
        yield from frames
        return
    lists: queue.Queue = queue.Queue(maxsize=max(1, depth // chunk))
    stop = threading.Event()

    def hand_over(batch: list, exc: BaseException | None = None, last: bool = False) -> bool:
        while not stop.is_set():
            try:
                lists.put((batch, exc, last), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        batch: list = []
        try:
            for item in frames:
                batch.append(item)
                if len(batch) >= chunk:
                    if not hand_over(batch):
                        return
                    batch = []
            hand_over(batch, last=True)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller
            hand_over(batch, exc, last=True)

    helper = threading.Thread(target=produce, name="decode-read-ahead", daemon=True)
    helper.start()
    try:
        while True:
            batch, exc, last = lists.get()
            yield from batch
            if exc is not None:
                raise exc
            if last:
                return
    finally:
        stop.set()
        while helper.is_alive():
            try:
                lists.get(timeout=0.1)
            except queue.Empty:
                pass
        helper.join()


def nominal_rate(stream) -> float:
    """The frame grid of a stream: r_frame_rate (24000/1001 for a VFR file with dropped frames),
    or the average rate where r_frame_rate is missing or implausible (> 120 fps, as some phone
    recordings report a timebase-like rate)."""
    guessed = stream.guessed_rate or stream.base_rate
    if guessed and 1 <= float(guessed) <= 120:
        return float(guessed)
    return float(stream.average_rate or Fraction(25))


def _header_duration(container, stream) -> float:
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0
