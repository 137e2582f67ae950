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

from svdcli.video.probe import (VideoError, use_decoder_threads, frame_rotation, open_container, picture_bytes,
                                stream_rotation)

ANALYSIS_WIDTH = 64  # pixels: enough to see a cut, coarse enough to damp motion, free next to decoding
OVERSAMPLE = 2  # bilinear to this many times the analysis size, then area-average down
READ_AHEAD = 16  # decoded frames the decoder may run ahead of the analysis (read_ahead)
RUN_FRAMES = 250  # runs of GOPs read by one reader are at least this long (fewer seeks)
MAX_GOP_FRAMES = 1000  # GOPs longer than this are decoded in one pass (readers hold whole runs)
MAX_RUN_READERS = 8  # each reader holds up to 2 runs read ahead: 8 x 2 x ~250 frames x ~44 KB at most
HOOK_PICTURE_BYTES = 128 << 20  # decoded pictures read ahead for frame hooks; beyond, hooks get converted frames
EIGHT_BIT_YUV = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"}
GAP_SECONDS = 1.0  # a step between frame times longer than this (and 3 frames) is a hole in the video


class FrameConsumer(Protocol):
    def feed(self, t: float, frame: np.ndarray) -> None:
        """Receive one decoded frame at `t` seconds from the first frame."""


class FrameHook(Protocol):
    def feed(self, t: float, frame) -> None:
        """Receive one decoded frame at `t`: the PyAV frame, or what a `prepare` converter made of it."""

    def prepare(self, width: int, height: int) -> Callable:
        """A converter (PyAV frame -> what `feed` takes) for a reader thread; each call a new one."""


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
                threads: int = 0, frame_hooks: Iterable[FrameHook | Callable] = (),
                on_open: Callable[[float], None] | None = None) -> DecodeResult:
    """Decode every frame of the first video stream once, feeding each consumer in turn.

    `convert(frame, size)` makes the analysis array (default: `yuv_analysis` at
    `yuv_analysis_size`); `threads` = 0 lets FFmpeg choose. Each of `frame_hooks` is fed
    `(t, frame)` for work that needs more than the analysis array (motion scoring in the same
    pass keeps gray frames): a `FrameHook` gets its own converter's output, a plain callable
    the decoded PyAV frame. `on_open(fps)` learns the nominal frame rate before the first
    frame. Raises VideoError for files that cannot be opened, hold no decodable frames, or fail
    part-way (with the time reached).

    With several threads (`threads` > 1, or 0 on a machine with several cores), H.264 in MP4
    whose IDR frames split it cleanly is read as runs of whole GOPs by one-thread decoders at
    once (`svdcli.video.gops`), each converting its frames as it decodes them (for a hook, its
    converter's output once the pictures read ahead reach HOOK_PICTURE_BYTES); the frames reach
    the consumers in order, the same arrays a single decoder gives (`_runs_plan` says when).
    Should a run not decode cleanly, the pass goes on with a single decoder from the start of
    the file, past the frames already handed over.

    Skipping H.264's deblocking filter would save ~15% but makes reference frames drift until
    the next keyframe, which showed up as a false cut on a real clip: every frame is decoded
    exactly.
    """
    import av

    consumers, hooks = list(consumers), list(frame_hooks)
    feeds = [getattr(hook, "feed", hook) for hook in hooks]
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
        plan = _runs_plan(path, stream, threads, hooks)
        if plan is None:
            items = _one_decoder(container, stream, threads, convert, size, len(hooks))
        else:
            items = _by_runs(path, plan, container, stream, threads, convert, size, hooks)
        try:
            for pts, array, source, inputs in items:
                if pts is None:  # rare (broken muxing): place it one nominal frame on
                    if last is None:
                        continue  # nothing to place it after yet
                    t = last + 1.0 / fps
                else:
                    if first is None:
                        first = float(pts * tb)
                        rotation = rotation or frame_rotation(source)
                    t = float(pts * tb) - first
                if not check.see(n + check.dropped, last, t):
                    continue  # duplicate or out-of-order PTS: keep times strictly increasing
                for feed, x in zip(feeds, inputs):
                    feed(t, x)
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


def _one_decoder(container, stream, threads: int, convert: Callable, size: tuple[int, int], hooks: int,
                 skip: int = 0) -> Iterator[tuple]:
    """(PTS, analysis array, frame, hook inputs) of every frame after the first `skip`, from one
    decoder on FFmpeg's threads; each frame is converted on the read-ahead thread as it comes
    out of the decoder: some of its pixels are still in the cache (720p: ~200 us a frame, ~230
    us when converted later)."""
    frames = _decoded(container, stream, threads)
    for _ in range(skip):
        next(frames, None)
    converted = ((frame.pts, convert(frame, size), frame, (frame,) * hooks) for frame in frames)
    return read_ahead(converted, READ_AHEAD)


@dataclass(frozen=True)
class _RunsPlan:
    targets: list[int]  # PTS of every frame, in presentation order
    runs: list[tuple[int, int, int | None]]  # (lo, hi, PTS of the IDR a run's reader seeks to)
    readers: int


def _runs_plan(path, stream, threads: int, hooks: list) -> _RunsPlan | None:
    """How to read the video as runs of GOPs, or None for one decoder: it takes H.264 in MP4, 2+
    readers, hooks that can convert on a reader's thread, every packet with its own PTS, and
    IDRs that split the stream cleanly into runs of at least RUN_FRAMES frames, with no GOP
    over MAX_GOP_FRAMES (a reader holds its runs' frames until the consumers get there)."""
    from svdcli.video.gops import runs, scan
    from svdcli.video.h264 import avcc_length_size

    readers = min(threads or os.cpu_count() or 1, MAX_RUN_READERS)
    length_size = avcc_length_size(stream)
    if readers < 2 or length_size is None or not all(hasattr(hook, "prepare") for hook in hooks):
        return None
    try:
        with open_container(path) as container:
            pts, splits, unplaced = scan(container, container.streams.video[0], length_size)
    except Exception:  # noqa: BLE001 - a file the demuxer stumbles on is decoded in one pass, as ever
        return None
    bounds = [0, *splits, len(pts)]
    if unplaced or not splits or len(set(pts)) < len(pts) or max(np.diff(bounds)) > MAX_GOP_FRAMES:
        return None
    targets = sorted(pts)
    tb = float(stream.time_base)
    groups = runs(pts, splits, stream.time_base, [p * tb for p in targets], readers, least=RUN_FRAMES)
    return _RunsPlan(targets, groups, min(readers, len(groups))) if len(groups) > 1 else None


def _by_runs(path, plan: _RunsPlan, container, stream, threads: int, convert: Callable, size: tuple[int, int],
             hooks: list) -> Iterator[tuple]:
    """`_one_decoder`'s items, read as the plan's runs of GOPs; where a run cannot be vouched for
    (a damaged or unexpected frame) or fails, one decoder takes over from the start of the file,
    past the frames already handed over."""
    from svdcli.video.gops import read_runs

    served = 0
    width, height = stream.codec_context.width, stream.codec_context.height
    budget = _PictureBudget(HOOK_PICTURE_BYTES)

    def make_reader(container, stream, lo: int, hi: int, start: int | None) -> _RunReader:
        return _RunReader(container, stream, plan.targets[lo:hi], start, convert, size,
                          [hook.prepare(width, height) for hook in hooks], (width, height), budget)

    try:
        for pts, array, source, inputs, held in read_runs(path, plan.runs, plan.readers, make_reader,
                                                          name="decode-run", chunk=8):
            yield pts, array, source, inputs
            budget.release(held)
            served += 1
        return
    except Exception:  # noqa: BLE001 - the one-decoder pass below reports what is really wrong
        pass
    yield from _one_decoder(container, stream, threads, convert, size, len(hooks), skip=served)


class _PictureBudget:
    """Bytes of decoded pictures the runs' readers handed over for the frame hooks and the
    consumer has not taken yet: a reader gives a hook the picture while they fit, else what the
    hook's converter makes of it (a conversion the hook might not have needed: the motion store
    converts only the frames it keeps)."""

    def __init__(self, limit: int):
        import threading

        self.limit, self.used, self.lock = limit, 0, threading.Lock()

    def take(self, nbytes: int) -> bool:
        with self.lock:
            if self.used + nbytes > self.limit:
                return False
            self.used += nbytes
            return True

    def release(self, nbytes: int) -> None:
        if nbytes:
            with self.lock:
                self.used -= nbytes


class _RunReader:
    """Every frame of one run of GOPs from its own seek, as `_one_decoder`'s items plus the bytes
    of picture they hold against the budget; the first frame of the video also carries its
    picture (its rotation is read there)."""

    def __init__(self, container, stream, targets: list[int], start: int | None, convert: Callable,
                 size: tuple[int, int], prepared: list[Callable], frame_size: tuple[int, int],
                 budget: _PictureBudget):
        self.container, self.stream, self.targets, self.start = container, stream, targets, start
        self.convert, self.size, self.prepared, self.frame_size = convert, size, prepared, frame_size
        self.budget, self.picture_bytes = budget, 0
        self.i = 0  # next frame

    def decode_pass(self) -> Iterator[tuple]:
        from svdcli.video.gops import Unsure

        if self.i:
            raise Unsure  # a run decodes whole in one pass, or not here
        at = self.start if self.start is not None else (self.stream.start_time or 0)
        self.container.seek(at, stream=self.stream, backward=True, any_frame=False)
        for packet in self.container.demux(self.stream):
            for frame in packet.decode():
                if frame.pts != self.targets[self.i] or frame.is_corrupt \
                        or (frame.width, frame.height) != self.frame_size:
                    raise Unsure  # not the frame one decoder would give here
                first = self.start is None and self.i == 0
                yield (frame.pts, self.convert(frame, self.size), frame if first else None, *self._for_hooks(frame))
                self.i += 1
                if self.i == len(self.targets):
                    return
        raise Unsure  # the stream ended before the run did

    def _for_hooks(self, frame) -> tuple[tuple, int]:
        """(what each hook gets, bytes of picture held against the budget)."""
        if not self.prepared:
            return (), 0
        self.picture_bytes = self.picture_bytes or picture_bytes(frame)
        if self.budget.take(self.picture_bytes):
            return (frame,) * len(self.prepared), self.picture_bytes
        return tuple(make(frame) for make in self.prepared), 0


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
