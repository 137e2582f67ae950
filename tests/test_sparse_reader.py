"""Sparse H.264 reader: GOPs no target needs are skipped, and no sampled pixel changes."""
from __future__ import annotations

import numpy as np
import pytest

from svdcli.video.h264 import avcc_length_size, is_disposable
from svdcli.video.gops import scan
from svdcli.video.sparse import _dead_packets, read_gray_at
from svdcli.video.synth import Shot, write_video

FPS = 24.0
GOP = 12  # an IDR frame every 0.5 s


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """4 s of panning shots at 160x96 with a short GOP, so most targets have IDRs between them."""
    path = tmp_path_factory.mktemp("sparse") / "gop.mp4"
    write_video(path, [Shot(48, seed=1, speed=(3.0, 1.0)), Shot(48, seed=2, speed=(-2.0, 0.5))],
                size=(160, 96), fps=FPS, gop=GOP)
    return path


def far_apart_times() -> list[float]:
    """Targets in a few GOPs only: on an IDR, just before one, and pairs 1/12 s apart."""
    idr = GOP / FPS
    return [0.02, 0.1, idr - 0.01, idr + 0.001, 4 * idr + 0.2, 4 * idr + 0.28, 7 * idr - 0.001, 3.95]


def test_sparse_times_match_a_full_decode_pixel_for_pixel(video):
    from svdcli.video.seek import read_frames_at

    rng = np.random.default_rng(1)
    for times in (far_apart_times(), sorted(rng.uniform(0, 4.0, 9).tolist()), [1.0, 1.0, 1.01]):
        frames, shown = read_gray_at(video, times, (128, 76))
        assert shown is not None, "H.264 in MP4 should be read sparsely, not by the fallback"
        assert np.array_equal(frames, read_frames_at(video, times, size=(128, 76), fmt="gray"))
        assert all(s <= t + 1e-4 for s, t in zip(shown, times))  # the frame shown never lies after its time


def test_gops_without_a_target_are_not_decoded(video):
    from svdcli.video.probe import open_container

    with open_container(video) as container:
        stream = container.streams.video[0]
        pts, splits, _ = scan(container, stream, avcc_length_size(stream))
        tb = stream.time_base
    assert len(splits) >= 6  # the encoder's IDRs split the stream
    dead = _dead_packets(pts, splits, tb, far_apart_times())
    gop_2 = {p for p in pts if 2 * GOP / FPS <= float(p * tb) < 3 * GOP / FPS}  # no target in [1.0, 1.5)
    assert gop_2 <= dead
    assert len(dead) > len(pts) / 3
    assert not _dead_packets(pts, splits, tb, [k / FPS + 0.01 for k in range(len(pts))])  # every frame wanted


def test_non_reference_frames_are_decoded_only_where_a_target_shows_them(video, monkeypatch):
    """x264's B-frames are mostly never referenced: the reader sends one to the decoder only when
    it is the frame a target shows (its PTS is the last at or before the target), and the frames
    it returns are still a full decode's."""
    from svdcli.video import sparse
    from svdcli.video.probe import open_container
    from svdcli.video.seek import read_frames_at

    with open_container(video) as container:
        stream = container.streams.video[0]
        length_size = avcc_length_size(stream)
        disposable = {float(p.pts * stream.time_base) for p in container.demux(stream)
                      if p.size and is_disposable(p, length_size)}
    assert len(disposable) > 30  # the encoder made non-reference B-frames to skip
    sent = []
    skip = sparse._SparseReader._skip

    def recording(self, packet):
        skipped = skip(self, packet)
        if not skipped and packet.size:
            sent.append(float(packet.pts * self.tb))
        return skipped

    monkeypatch.setattr(sparse._SparseReader, "_skip", recording)
    times = [k * 0.29 + 0.01 for k in range(13)]  # every 7th frame, give or take: B-frames among them
    frames, shown = read_gray_at(video, times, (128, 76))
    assert np.array_equal(frames, read_frames_at(video, times, size=(128, 76), fmt="gray"))
    decoded_disposable = {t for t in sent if t in disposable}
    assert decoded_disposable <= set(shown)  # none decoded that no target shows
    assert decoded_disposable == set(shown) & disposable and decoded_disposable  # some targets show B-frames


# --- GOPs read at once ----------------------------------------------------------------------

def dense_times() -> list[float]:
    """A target every 3rd frame, give or take, over the whole video: every GOP has some."""
    return [k * 0.13 + 0.01 for k in range(30)]


def _reader_threads() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("sparse-read")]


def test_gop_groups_cover_the_targets_in_order_and_never_split_a_gop(video):
    from svdcli.video.probe import open_container
    from svdcli.video.gops import runs

    with open_container(video) as container:
        stream = container.streams.video[0]
        pts, splits, _ = scan(container, stream, avcc_length_size(stream))
        tb = stream.time_base
    times = dense_times()
    groups = runs(pts, splits, tb, times, readers=2)
    assert len(groups) >= 3
    assert groups[0][0] == 0 and groups[-1][1] == len(times)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:]))  # contiguous, in order
    assert all(hi - lo >= 8 for lo, hi, _ in groups[:-1])  # no run too short for its seek
    idr = [float(pts[k] * tb) for k in splits]
    for lo, _, start in groups[1:]:  # a group starts where a GOP starts: the GOP before it ends before
        gop = sum(i <= times[lo] + 1e-4 for i in idr)
        assert sum(i <= times[lo - 1] + 1e-4 for i in idr) < gop
        assert start == pts[splits[gop - 1]]  # its reader seeks to that GOP's IDR
    assert groups[0][2] is None  # the first targets lie before the first split: read from the start


@pytest.mark.parametrize("readers", [2, 3])
def test_gops_read_at_once_give_the_one_pass_frames(video, readers, monkeypatch):
    from svdcli.video import sparse
    from svdcli.video.seek import read_frames_at

    used = []
    concurrent = sparse.read_runs
    monkeypatch.setattr(sparse, "read_runs", lambda *a, **k: used.append(a[2]) or concurrent(*a, **k))
    times = dense_times()
    frames, shown = read_gray_at(video, times, (128, 76), threads=readers)
    assert used == [readers]  # the concurrent path, not the one-pass reader
    one_pass, one_pass_shown = read_gray_at(video, times, (128, 76), threads=1)
    assert len(used) == 1
    assert np.array_equal(frames, one_pass) and shown == one_pass_shown
    assert np.array_equal(frames, read_frames_at(video, times, size=(128, 76), fmt="gray"))
    assert not _reader_threads()


def test_readers_stay_a_few_groups_ahead_and_stop_when_the_caller_does(video, monkeypatch):
    import time

    from svdcli.video import sparse
    from svdcli.video.sparse import iter_gray_at

    started = []
    make = sparse._SparseReader
    monkeypatch.setattr(sparse, "_SparseReader", lambda *a: started.append(a[3][0]) or make(*a))
    times = [k / FPS + 0.01 for k in range(96)]  # every frame: 12 groups of 8 targets
    frames = iter_gray_at(video, times, (128, 76), threads=2)
    first, _ = next(frames)  # the first group's frames come as they are read
    time.sleep(0.5)
    assert first.shape == (76, 128)
    assert len(started) <= 4  # 2 groups per reader ahead of the caller, of the 12
    frames.close()
    assert not _reader_threads()


@pytest.mark.parametrize("failure", ["unsure", "error", "open"])
def test_a_failing_group_ends_the_read_in_order(video, monkeypatch, failure):
    """A group the reader cannot vouch for falls back to a full read from the first frame not
    handed over; any other error (a broken packet, a file that cannot be opened again) reaches
    the caller after frames handed over in order; no reader thread outlives the read."""
    from svdcli.video import probe, sparse
    from svdcli.video.seek import read_frames_at

    times = dense_times()
    one_pass = read_gray_at(video, times, (128, 76), threads=1)[1]
    bad = times[len(times) // 2]
    decode_pass = sparse._SparseReader.decode_pass

    def failing(self):
        if failure != "open" and self.targets[0] - self.origin >= bad - 1e-9:
            raise sparse.Unsure if failure == "unsure" else RuntimeError("broken packet")
        return decode_pass(self)

    monkeypatch.setattr(sparse._SparseReader, "decode_pass", failing)
    opened, open_container = [], probe.open_container

    def third_fails(path):
        opened.append(path)
        if failure == "open" and len(opened) == 3:  # the scan's, one reader's; the other reader's fails
            raise probe.VideoError("gone")
        return open_container(path)

    monkeypatch.setattr(probe, "open_container", third_fails)
    if failure == "unsure":
        frames, shown = read_gray_at(video, times, (128, 76), threads=2)
        assert np.array_equal(frames, read_frames_at(video, times, size=(128, 76), fmt="gray"))
        assert shown == one_pass
    else:
        got = []
        with pytest.raises(RuntimeError if failure == "error" else probe.VideoError):
            for _, at in sparse.iter_gray_at(video, times, (128, 76), threads=2):
                got.append(at)
        assert got == one_pass[:len(got)]  # in order, none missing before the error
        assert failure == "open" or all(t < bad for t in got)
    assert len(opened) >= 3  # the readers opened the file themselves
    assert not _reader_threads()


def test_a_gop_that_decodes_with_errors_on_its_own_is_read_again_in_one_pass(video, monkeypatch):
    """A GOP read from its own seek may lack decoder state from before it (FFmpeg learns an old
    x264's version from the first packet only): every reader decodes the first frame before
    seeking, and a frame decoded with errors all the same sends the rest of the read to the
    one-pass reader, so the frames stay a full decode's."""
    from svdcli.video import seek, sparse

    primed, first_frame_time = [], seek.first_frame_time
    monkeypatch.setattr(seek, "first_frame_time", lambda c, s: primed.append(1) or first_frame_time(c, s))
    times = dense_times()
    frames, shown = read_gray_at(video, times, (128, 76), threads=2)
    assert len(primed) == 3  # the scan's container and each reader's, before their first seek

    fallback, read_frames_at = [], seek.read_frames_at
    monkeypatch.setattr(seek, "read_frames_at", lambda p, t, **k: fallback.append(len(t)) or read_frames_at(p, t, **k))
    monkeypatch.setattr(sparse, "_damaged", lambda frame: True)
    damaged, damaged_shown = read_gray_at(video, times, (128, 76), threads=2)
    assert fallback and fallback[0] < len(times)  # the first GOPs (read from the start) were kept
    assert np.array_equal(damaged, frames) and damaged_shown == shown
    assert np.array_equal(frames, read_frames_at(video, times, size=(128, 76), fmt="gray"))
