"""One-pass decoding read as runs of GOPs by several one-thread decoders: the frames, their
times, the analysis arrays and the hooks' gray frames are one decoder's, in order; a run that
cannot be vouched for hands the rest of the pass to one decoder."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from svdcli.video import decode, gops
from svdcli.video.decode import decode_once
from svdcli.video.gray import GrayFrameStore
from svdcli.video.probe import VideoError
from svdcli.video.synth import Shot, write_video
from test_decode import Recorder
from test_sparse_reader import FPS, GOP, video  # noqa: F401 - `video`: 4 s of pans, 8 GOPs of 12 frames


@pytest.fixture
def short_runs(monkeypatch):
    """Runs of 2 GOPs, so the 96 frames make 4 runs."""
    monkeypatch.setattr(decode, "RUN_FRAMES", 2 * GOP)


@pytest.fixture
def read_runs_calls(monkeypatch):
    calls = []
    real = gops.read_runs

    def spy(path, groups, readers, make_reader, **kw):
        calls.append((len(groups), readers))
        return real(path, groups, readers, make_reader, **kw)

    monkeypatch.setattr(gops, "read_runs", spy)
    return calls


def one_pass(path, threads: int, hook: str = "store"):
    """(DecodeResult, analysis recorder, gray frames a store kept at every frame time)."""
    rec, store = Recorder(), GrayFrameStore(lambda w, h: (64, 40))
    with store:
        info = decode_once(path, [rec], threads=threads, frame_hooks=[store if hook == "store" else store.feed])
        gray, _ = store.frames_at(rec.times)
    return info, rec, gray


def assert_same(a, b):
    (info_a, rec_a, gray_a), (info_b, rec_b, gray_b) = a, b
    assert info_a == info_b
    assert rec_a.times == rec_b.times
    assert all(np.array_equal(x, y) for x, y in zip(rec_a.frames, rec_b.frames))
    assert np.array_equal(gray_a, gray_b)


def run_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("decode-run")]


@pytest.mark.parametrize("readers, pictures", [(2, 128 << 20), (3, 128 << 20), (2, 200_000), (2, 0)])
def test_runs_of_gops_give_one_decoders_frames(video, short_runs, read_runs_calls, monkeypatch, readers, pictures):
    """The hooks get pictures while they fit the budget (`pictures` bytes not yet taken), their
    converters' frames beyond it (a 160x96 picture holds ~23 KB): the same gray frames either way."""
    monkeypatch.setattr(decode, "HOOK_PICTURE_BYTES", pictures)
    budgets = []
    monkeypatch.setattr(decode, "_PictureBudget", lambda limit, make=decode._PictureBudget: budgets.append(make(limit))
                        or budgets[-1])
    single = one_pass(video, threads=1)
    assert not read_runs_calls  # one thread: one decoder
    runs = one_pass(video, threads=readers)
    assert read_runs_calls == [(4, readers)]
    assert budgets[0].used == 0  # every picture handed over was taken off the budget again
    assert runs[0].frames == 96 and len(runs[1].times) == 96
    assert_same(single, runs)
    assert not run_threads()


def test_hooks_that_take_pictures_keep_one_decoder(video, short_runs, read_runs_calls):
    """A plain callable hook is handed the decoded picture, which only one decoder has in order."""
    picture_hook = one_pass(video, threads=2, hook="callable")
    assert not read_runs_calls
    assert_same(one_pass(video, threads=1), picture_hook)


def test_where_runs_do_not_pay_the_pass_keeps_one_decoder(tmp_path, video, short_runs):
    import av

    def plan(path, threads=2):
        with av.open(str(path)) as container:
            return decode._runs_plan(path, container.streams.video[0], threads, [])

    assert plan(video) is not None and len(plan(video).runs) == 4
    assert plan(video, threads=1) is None
    single_gop = tmp_path / "one_gop.mp4"
    write_video(single_gop, [Shot(48, seed=3, speed=(1.0, 0.0))], size=(160, 96), fps=FPS)
    assert plan(single_gop) is None  # nothing to split
    other = tmp_path / "v.mkv"
    write_video(other, [Shot(48, seed=3)], size=(160, 96), fps=FPS, codec="mpeg4", gop=GOP)
    assert plan(other) is None  # not H.264


@pytest.mark.parametrize("failure", ["unsure", "error"])
def test_a_run_that_fails_hands_the_rest_to_one_decoder(video, short_runs, read_runs_calls, monkeypatch, failure):
    """From the run that failed on, one decoder reads the file from its start and hands over the
    frames after those already handed over: every frame once, the same as one decoder's."""
    single = one_pass(video, threads=1)
    passes = decode._RunReader.decode_pass

    def failing(self):
        if self.start is not None and self.targets[0] >= single[1].times[48] / float(self.stream.time_base) - 1:
            raise gops.Unsure if failure == "unsure" else RuntimeError("broken packet")
        return passes(self)

    monkeypatch.setattr(decode._RunReader, "decode_pass", failing)
    taken_over = one_pass(video, threads=2)
    assert read_runs_calls == [(4, 2)]
    assert_same(single, taken_over)
    assert not run_threads()


def test_a_file_cut_off_fails_where_one_decoder_does(tmp_path, video, short_runs, read_runs_calls, monkeypatch):
    from odd_files import cut_off

    _, damaged = cut_off(video, tmp_path)
    outcomes = []
    plan = decode._runs_plan
    for runs in (False, True):  # one decoder on the same FFmpeg threads, then runs of GOPs
        monkeypatch.setattr(decode, "_runs_plan", plan if runs else lambda *a: None)
        rec = Recorder()
        with pytest.raises(VideoError, match="decoding failed after") as failed:
            decode_once(damaged, [rec], threads=2)
        outcomes.append((str(failed.value), rec.times))
    assert len(read_runs_calls) == 1  # read as runs as far as the file goes, then by one decoder
    assert outcomes[0] == outcomes[1]
    assert 0 < len(outcomes[0][1]) < 96
    assert not run_threads()


def test_a_run_whose_frames_are_not_the_scans_is_not_trusted(video, short_runs, read_runs_calls, monkeypatch):
    """Should a decoder give other frames than the scan's packets promise (a frame dropped, one
    more), the run is not handed over as it is: one decoder takes over, and no frame comes twice."""
    real = decode._runs_plan

    def one_frame_more(*args):
        plan = real(*args)
        if plan is None:
            return None
        lo, hi, _ = plan.runs[1]
        k = lo + 5
        targets = plan.targets[:k] + [plan.targets[k] - 1] + plan.targets[k:]  # a PTS no packet has
        runs = [(a + (j > 1), b + (j >= 1), start) for j, (a, b, start) in enumerate(plan.runs)]
        return decode._RunsPlan(targets, runs, plan.readers)

    monkeypatch.setattr(decode, "_runs_plan", one_frame_more)
    assert_same(one_pass(video, threads=1), one_pass(video, threads=2))
    assert read_runs_calls == [(4, 2)]
