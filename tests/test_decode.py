"""Single-pass decoding: times from PTS, one conversion shared by every consumer, clear errors."""
from __future__ import annotations

import os

import numpy as np
import pytest

from svdcli.video.decode import decode_once, yuv_analysis_size
from svdcli.video.probe import VideoError, probe
from svdcli.video.synth import Shot, write_video


class Recorder:
    def __init__(self):
        self.times, self.frames = [], []

    def feed(self, t, frame):
        self.times.append(t)
        self.frames.append(frame)


@pytest.fixture(scope="module")
def pan(tmp_path_factory):
    path = tmp_path_factory.mktemp("decode") / "pan.mp4"
    write_video(path, [Shot(36, seed=3, speed=(1.0, 0.0))], size=(160, 96), fps=24)
    return path


def test_every_consumer_sees_every_frame_once_in_order(pan):
    a, b = Recorder(), Recorder()
    info = decode_once(pan, [a, b])
    assert info.frames == 36 == len(a.times) == len(b.times)
    assert a.times == b.times and a.times[0] == 0.0
    assert np.allclose(np.diff(a.times), 1 / 24)
    assert all(x is y for x, y in zip(a.frames, b.frames))  # converted once, shared
    assert a.frames[0].shape == (3, *yuv_analysis_size(160, 96)[::-1]) and a.frames[0].dtype == np.uint8
    assert info.end_time == pytest.approx(36 / 24)


def test_analysis_array_follows_the_picture(pan):
    rec = Recorder()
    decode_once(pan, [rec])
    # a pan moves the picture: consecutive frames differ, but far less than unrelated content
    step = np.abs(rec.frames[1].astype(int) - rec.frames[0].astype(int)).mean()
    assert 0.1 < step < 20


def write_sliced(path, slices: int):
    """A pan coded in `slices` slices per picture (x264 makes one unless told; cameras often more)."""
    from svdcli.video.synth import compose
    from svdcli.video.write import write_frames

    frames, _ = compose([Shot(30, seed=5, speed=(1.5, 0.5))], [], 96, 160, 24)
    return write_frames(path, frames, 24, options={"x264-params": f"slices={slices}"})


def test_pictures_in_several_slices_decode_on_slice_threads_to_the_same_frames(tmp_path, monkeypatch):
    from svdcli.video import decode

    chosen = []
    real = decode.use_decoder_threads

    def spy(stream, threads=0, slices=1):
        real(stream, threads, slices)
        chosen.append((slices, stream.thread_type.name, stream.thread_count))

    monkeypatch.setattr(decode, "use_decoder_threads", spy)
    for slices in (1, 3):
        video = write_sliced(tmp_path / f"s{slices}.mp4", slices)
        threaded, single = Recorder(), Recorder()
        decode_once(video, [threaded], threads=2)
        decode_once(video, [single], threads=1)
        assert threaded.times == single.times and len(single.times) == 30
        assert all(np.array_equal(a, b) for a, b in zip(threaded.frames, single.frames))
    assert chosen == [(1, "AUTO", 2), (1, "AUTO", 1), (3, "SLICE", 2), (3, "SLICE", 1)]


def test_counter_times_are_exact_per_frame(testdata):
    rec = Recorder()
    info = decode_once(testdata / "pyscenedetect/counter.mp4", [rec])
    assert info.frames == 30 and info.fps == 10
    assert rec.times == pytest.approx([k / 10 for k in range(30)], abs=1e-9)


def test_delayed_start_times_count_from_the_first_frame(testdata):
    rec = Recorder()
    info = decode_once(testdata / "pyscenedetect/delayed_start.mp4", [rec])
    assert info.first_pts == pytest.approx(1.075, abs=1e-3)
    assert rec.times[0] == 0.0 and info.end_time == pytest.approx(24 / 25, abs=1e-3)


def test_vfr_keeps_pts_times_and_nominal_grid(testdata):
    rec = Recorder()
    info = decode_once(testdata / "pyscenedetect/goldeneye-vfr-drop3.mp4", [rec])
    assert info.frames == 160
    assert info.fps == pytest.approx(24000 / 1001)  # nominal, not the 16 fps average
    gaps = np.round(np.diff(rec.times) * info.fps).astype(int)
    assert set(gaps) == {1, 2}  # dropped frames show up as 2-frame gaps


def test_rotation_is_read_from_the_display_matrix(testdata):
    path = testdata / "pyscenedetect/issue-134-rotate.mp4"
    assert probe(path).rotation == 90
    assert decode_once(path, [], size=(8, 4)).rotation == 90
    assert probe(testdata / "pyscenedetect/testvideo.mp4").rotation == 0


def test_unreadable_inputs_raise_video_errors(tmp_path, pan):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(pan.read_bytes()[:2000])
    for path, words in [(tmp_path / "missing.mp4", "not found"), (empty, "0 bytes"),
                        (junk, "cannot open"), (cut, "cannot open")]:
        with pytest.raises(VideoError, match=words):
            decode_once(path, [Recorder()])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_gray_conversion_starts_no_threads_and_equals_swscales_own(tmp_path):
    """One small gray picture is not worth swscale's threads (its default: one per core), which
    would compete with the decoder and the pair scoring; the pixels are the same either way
    (identical on dev-cpu; one grey level allowed for another CPU's SIMD path)."""
    import av
    from av.video.reformatter import VideoReformatter

    from svdcli.video.gray import GrayConverter

    frame = av.VideoFrame.from_ndarray(np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), np.uint8), "rgb24")
    frame = frame.reformat(format="yuv420p")
    before = len(os.listdir("/proc/self/task"))
    convert = GrayConverter((256, 144))  # its swscale context, and any threads, live as long as it does
    gray = convert(frame)
    assert len(os.listdir("/proc/self/task")) == before
    threaded = VideoReformatter().reformat(frame, 256, 144, "gray", interpolation="AREA").to_ndarray()
    assert gray.shape == (144, 256) and np.abs(gray.astype(np.int16) - threaded).max() <= 1
