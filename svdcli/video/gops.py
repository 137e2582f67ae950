"""Runs of whole H.264 GOPs read at once, each by its own one-thread decoder.

Nothing after a clean IDR frame references a frame before it, and nothing before it is shown
after it, so the runs of GOPs between such IDRs decode independently: several decoders can
read them at the same time and hand their frames over in order. One-thread decoders on
separate runs share no frame and wait on nothing, where FFmpeg's own frame or slice threads
synchronise every picture; on a machine whose cores are shared that wait is what slows a
threaded decode down.

- `scan`: the PTS of every packet (a demux-only pass, ~25 ms per minute of 720p, 1-2% of
  decoding it) and the IDRs that split the stream cleanly;
- `runs`: sorted target times grouped into runs of whole GOPs;
- `read_runs`: the runs read by several threads, their items handed over in order.

Used by the sparse reader (`svdcli.video.sparse`: the frames at given times) and by the
one-pass decode (`svdcli.video.decode`: every frame).
"""
from __future__ import annotations

import bisect
import threading
from typing import Callable, Iterator

import numpy as np

from svdcli.video.h264 import is_idr

EPS = 1e-4  # seconds: a frame is shown at a target when its PTS <= target + EPS


class Unsure(Exception):
    """A reader cannot vouch for what it would hand over (a frame it skipped might be the one
    shown, a run read on its own decoded with errors): the caller reads the rest another way."""


def scan(container, stream, length_size: int) -> tuple[list[int], list[int], int]:
    """PTS of every packet in decode order, the indices of the IDRs that split the stream
    cleanly, and how many packets carry no PTS (left out of the list).

    An IDR counts only when every packet before it has an earlier PTS and none after it an
    earlier one, so skipping up to it can never hide a frame a target would show.
    """
    pts, idr, unplaced = [], [], 0
    for packet in container.demux(stream):
        if not packet.size:
            continue
        if packet.pts is None:
            unplaced += 1
            continue
        pts.append(packet.pts)
        idr.append(packet.is_keyframe and is_idr(packet, length_size))
    suffix_min = np.minimum.accumulate(np.array(pts[::-1] or [0], np.int64))[::-1]  # min PTS from k on
    splits, before = [], None
    for k, (p, at_idr) in enumerate(zip(pts, idr)):
        if at_idr and k and before < p and suffix_min[k] >= p:
            splits.append(k)
        before = p if before is None else max(before, p)
    return pts, splits, unplaced


def runs(pts: list[int], splits: list[int], tb, targets: list[float], readers: int,
         least: int | None = None) -> list[tuple[int, int, int | None]]:
    """The targets in runs of whole GOPs, as (lo, hi, start): what `readers` decoders can read at
    the same time, each from its own seek, with nothing to share (no frame of one GOP references
    another, nor is shown at a target of another). `targets[lo:hi]` are a run's targets and
    `start` the PTS of the IDR its first GOP starts with (None for the video's first GOP): a
    seek there lands on that IDR, so the run decodes as a pass through the whole video would.
    Neighbouring GOPs are joined up to `least` targets (default: a share of them), so no run is
    too short to be worth its seek."""
    secs = [pts[k] * float(tb) for k in splits]  # where each clean GOP after the first starts
    least = max(8, len(targets) // (4 * readers)) if least is None else least
    groups, lo, first, gop = [], 0, None, None
    for i, t in enumerate(targets):
        here = bisect.bisect_right(secs, t + EPS)  # the GOP of the frame shown at t (0: before any split)
        if gop is None or (here != gop and i - lo >= least):
            if gop is not None:
                groups.append((lo, i, first))
            lo, first = i, pts[splits[here - 1]] if here else None
        gop = here
    if gop is not None:
        groups.append((lo, len(targets), first))
    return groups


def read_runs(path, groups: list[tuple[int, int, int | None]], readers: int, make_reader: Callable,
              name: str = "gop-read", chunk: int = 1) -> Iterator:
    """The items of every run of targets, in order and each as soon as it is read, by `readers`
    threads at once (each with its own container and a one-thread decoder: FFmpeg leaves the
    GIL while it decodes).

    `make_reader(container, stream, lo, hi, start)` gives an object with `targets`, `i` (the
    next target) and `decode_pass()` (yields items, advancing `i`). Each reader's decoder sees
    the file's first frame before it seeks, as a one-pass decoder does: what it learns there
    stays (FFmpeg reads the x264 version from the first packet's SEI, and old x264's 4:4:4
    pictures decode wrongly without it).

    A reader runs at most 2 runs per thread ahead of the caller and hands its items over
    `chunk` at a time (each hand-over wakes the caller). The first error of any reader
    (`Unsure` included) stops them all; the caller gets every item read in order up to where a
    run was left unfinished, then that error. Threads are named `name`_k.
    """
    from svdcli.video.probe import open_container, use_decoder_threads
    from svdcli.video.seek import first_frame_time

    got: dict[int, list] = {}  # run -> its items so far
    ended: dict[int, bool] = {}  # run -> whether all its targets were read, once its reader left it
    state: dict = {"next": 0, "taken": 0, "error": None}
    changed = threading.Condition()

    def take() -> int | None:
        with changed:
            changed.wait_for(lambda: state["error"] or state["next"] < min(len(groups), state["taken"] + 2 * readers))
            if state["error"] or state["next"] == len(groups):
                return None
            state["next"] += 1
            got[state["next"] - 1] = []
            return state["next"] - 1

    def hand_over(g: int, batch: list) -> None:
        if batch:
            with changed:
                got[g].extend(batch)
                changed.notify_all()

    def read() -> None:
        g = None
        try:
            with open_container(path) as container:
                stream = container.streams.video[0]
                use_decoder_threads(stream, 1)
                first_frame_time(container, stream)
                while (g := take()) is not None:
                    reader = make_reader(container, stream, *groups[g])
                    batch: list = []
                    try:
                        while reader.i < len(reader.targets) and not state["error"]:
                            for item in reader.decode_pass():
                                batch.append(item)
                                if len(batch) >= chunk:
                                    hand_over(g, batch)
                                    batch = []
                    finally:  # what was read before an error is the caller's too
                        hand_over(g, batch)
                    with changed:
                        ended[g] = reader.i == len(reader.targets)
                        changed.notify_all()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller, in order
            with changed:
                if g is not None:
                    ended[g] = False
                state["error"] = state["error"] or exc
                changed.notify_all()

    threads = [threading.Thread(target=read, name=f"{name}_{k}", daemon=True) for k in range(readers)]
    for thread in threads:
        thread.start()
    try:
        for g in range(len(groups)):
            with changed:
                state["taken"] = g  # the runs before it are handed over: readers may take more
                changed.notify_all()
            served = 0
            while True:
                with changed:
                    changed.wait_for(lambda: len(got.get(g, ())) > served or g in ended
                                     or (state["error"] and g not in got))
                    items = got.get(g, [])[served:]
                    over, whole = g in ended or g not in got, ended.get(g, False)
                yield from items
                served += len(items)
                if over:
                    break
            got.pop(g, None)
            if not whole:
                raise state["error"]
    finally:
        with changed:
            state["error"] = state["error"] or GeneratorExit()
            changed.notify_all()
        for thread in threads:
            thread.join()
