"""Cut detection on synthetic clips with known boundaries: the cascade, clip rows, bad inputs, resume."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from svdcli.cli.main import app
from svdcli.curate.stages import cuts as cuts_mod
from svdcli.curate.scorers.cascade import Boundary, Cascade, CascadeConfig, _Sampler, default_levels
from svdcli.curate.stages.cuts import CutsConfig, run_cuts, segments
from svdcli.manifest.io import manifest_history, read_manifest
from svdcli.manifest.schema import MANIFEST_VERSION, VERSION_KEY
from svdcli.video.decode import decode_once
from svdcli.video.synth import Shot, Transition, render_shot, write_video

FPS = 24


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Panning shots joined by a cut, a dissolve, a fade through black, a cut and a long dissolve."""
    root = tmp_path_factory.mktemp("cuts")
    shots = [Shot(48, seed=1, speed=(0.5, 0.0)), Shot(60, seed=2), Shot(60, seed=3, speed=(1.0, 0.3)),
             Shot(60, seed=4, speed=(-0.7, 0.0)), Shot(48, seed=5, speed=(0.4, 0.4)), Shot(48, seed=6, speed=(1.0, 0.0))]
    trs = [Transition("cut"), Transition("dissolve", 18), Transition("fade", 12), Transition("cut"),
           Transition("dissolve", 24)]
    truth = write_video(root / "mixed.mp4", shots, trs, size=(160, 96), fps=FPS)
    write_video(root / "static.mp4", [Shot(96, seed=7)], size=(160, 96), fps=FPS)
    write_video(root / "slowpan.mp4", [Shot(96, seed=8, speed=(0.4, 0.2))], size=(160, 96), fps=FPS)
    write_video(root / "short.mp4", [Shot(30, seed=9), Shot(30, seed=10, speed=(0.5, 0))], size=(160, 96), fps=FPS)
    return root, truth


def detect(path, levels=None):
    cascade = Cascade(CascadeConfig(levels or default_levels()))
    decode_once(path, cascade.consumers())
    return cascade.boundaries()


def matches(found: list[Boundary], truth) -> list[Boundary | None]:
    """For each true change, the detected boundary inside it (or within 2 frames of a cut)."""
    spans = [(c, c) for c in truth.cuts] + [(a, b) for _, a, b in truth.transitions]
    out = []
    for a, b in sorted(spans):
        hit = [f for f in found if a - 2 <= f.time * FPS <= b + 2]
        out.append(hit[0] if hit else None)
    return out


def test_cascade_finds_every_change_and_nothing_else(corpus):
    root, truth = corpus
    found = detect(root / "mixed.mp4")
    hits = matches(found, truth)
    assert all(hits), [f.time * FPS for f in found]
    assert len(found) == len(hits)  # no false cuts in the panning shots
    # hard cuts are exact to the frame
    for cut in truth.cuts:
        assert any(round(f.first_new * FPS) == cut and round(f.last_old * FPS) == cut - 1 for f in found)


def test_slow_levels_catch_dissolves_the_native_level_misses(corpus):
    root, truth = corpus
    native = detect(root / "mixed.mp4", default_levels((None,)))
    dissolves = [(a, b) for kind, a, b in truth.transitions if kind == "dissolve"]
    assert not [f for f in native for a, b in dissolves if a <= f.time * FPS <= b]
    cascade = detect(root / "mixed.mp4")
    for a, b in dissolves:
        hit = [f for f in cascade if a - 2 <= f.time * FPS <= b + 2]
        assert hit and "native" not in hit[0].levels and {"15fps", "8fps"} & set(hit[0].levels)


def test_static_shot_and_slow_pan_give_no_cuts(corpus):
    root, _ = corpus
    assert detect(root / "static.mp4") == []
    assert detect(root / "slowpan.mp4") == []


def test_levels_sample_by_timestamp_at_29_97_fps():
    sampler = _Sampler(15.0)
    times = [k * 1001 / 30000 for k in range(300)]  # 10 s at 29.97 fps
    kept = [t for t in times if sampler.wants(t)]
    # frame-skip arithmetic (int(29.97 // 15) - 1 = 0) would keep all 300 frames
    assert len(kept) == 150
    assert min(np.diff(kept)) >= 1 / 15 - 1001 / 30000


def _b(old: float, new: float) -> Boundary:
    return Boundary(new, old, new, {"native": 50.0})


def test_segments_trim_min_length_and_split():
    frame_after = lambda t: round(t * 10 + 1) / 10  # a 10 fps grid  # noqa: E731
    bounds = [_b(0.9, 1.0), _b(1.2, 1.3), _b(9.9, 10.0)]
    plain = segments(bounds, 20.0, frame_after, CutsConfig(min_length=0.5))
    # the 0.3 s piece between the cuts at 1.0 and 1.3 is kept as a short row, never merged away
    assert [(s.start, s.end, s.cause, s.short) for s in plain] == [
        (0.0, 1.0, "video_start", False), (1.0, 1.3, "cut", True), (1.3, 10.0, "cut", False), (10.0, 20.0, "cut", False)]
    assert plain[1].scores == (("native", 50.0),)
    trimmed = segments(bounds, 20.0, frame_after, CutsConfig(trim=0.2, min_length=0.5))
    # trimming 0.2 s from both ends of the 0.3 s piece leaves nothing: no row
    assert [x for s in trimmed for x in (s.start, s.end)] == pytest.approx([0.0, 0.8, 1.5, 9.8, 10.2, 20.0])
    split = segments(bounds, 20.0, frame_after, CutsConfig(min_length=0.5, max_length=4.0))
    last = [s for s in split if s.start >= 10.0]
    assert [s.cause for s in last] == ["cut", "split", "split"]
    assert all(s.end - s.start == pytest.approx(10 / 3) for s in last) and last[-1].end == 20.0


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, corpus):
    import av

    root = tmp_path_factory.mktemp("bad")
    (root / "empty.mp4").write_bytes(b"")
    (root / "junk.mov").write_bytes(np.random.default_rng(1).bytes(8192))
    (root / "truncated.mp4").write_bytes((corpus[0] / "mixed.mp4").read_bytes()[:20000])
    # index first (faststart), so the cut-off file opens and decodes until its data ends
    with av.open(str(root / "faststart.tmp"), "w", format="mp4", options={"movflags": "faststart"}) as c:
        stream = c.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for frame in render_shot(Shot(96, seed=12, speed=(0.5, 0.0)), 96, 160):
            for p in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(p)
        for p in stream.encode():
            c.mux(p)
    data = (root / "faststart.tmp").read_bytes()
    (root / "cut_off.mp4").write_bytes(data[:len(data) * 3 // 4])
    with av.open(str(root / "audio_only.mp4"), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for p in stream.encode(frame):
                c.mux(p)
        for p in stream.encode():
            c.mux(p)
    return root


def test_cli_writes_a_manifest_with_error_rows_and_a_summary(tmp_path, corpus, bad_inputs):
    root, truth = corpus
    out = tmp_path / "clips.parquet"
    missing = tmp_path / "gone.mp4"
    res = CliRunner().invoke(app, ["curate", "cuts", str(root / "mixed.mp4"), str(bad_inputs), str(missing),
                                   "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "7 videos, 6 clips, 0 short pieces, 6 errors" in res.output
    table = read_manifest(out)
    assert table.schema.metadata[VERSION_KEY] == str(MANIFEST_VERSION).encode()
    assert manifest_history(out)[-1]["stage"] == "cuts"
    rows = table.to_pylist()
    errors = {r["video_path"].rsplit("/", 1)[-1]: r["error"] for r in rows if r["status"] == "error"}
    assert set(errors) == {"empty.mp4", "junk.mov", "truncated.mp4", "cut_off.mp4", "audio_only.mp4", "gone.mp4"}
    assert "truncated" in errors["cut_off.mp4"]
    assert "not found" in errors["gone.mp4"] and "0 bytes" in errors["empty.mp4"]
    assert "no video stream" in errors["audio_only.mp4"]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == len(truth.cuts) + len(truth.transitions) + 1
    assert ok[0]["start_frame"] == 0 and ok[-1]["end_frame"] == truth.num_frames
    for r in ok:
        assert r["clip_id"] == f"{r['video_id']}_{r['start_frame']}_{r['end_frame']}"
        assert r["num_frames"] == r["end_frame"] - r["start_frame"] > 0
        assert r["fps"] == FPS and (r["width"], r["height"]) == (160, 96)
        assert (r["start_cause"] == "cut") == bool(r["start_levels"])
    assert not (tmp_path / "clips.parquet.parts").exists()


def test_a_video_shorter_than_min_length_is_one_short_row_not_an_error(tmp_path):
    write_video(tmp_path / "tiny.mp4", [Shot(8, seed=11)], size=(160, 96), fps=FPS)
    out = tmp_path / "tiny.parquet"
    summary = run_cuts([tmp_path / "tiny.mp4"], out, CutsConfig(min_length=0.5))
    [row] = read_manifest(out).to_pylist()
    assert summary.complete and summary.errors == 0 and summary.short == 1 and summary.clips == 0
    assert row["status"] == "short" and "below --min-length 0.5" in row["error"]
    assert (row["start_frame"], row["end_frame"], row["num_frames"]) == (0, 8, 8)  # the frames it holds


def test_workers_and_ranks_give_the_same_manifest(tmp_path, corpus):
    root, _ = corpus
    one, two, shared = tmp_path / "one.parquet", tmp_path / "two.parquet", tmp_path / "ranks.parquet"
    run_cuts([root], one, CutsConfig())
    run_cuts([root], two, CutsConfig(), workers=2)
    first = run_cuts([root], shared, CutsConfig(), rank=0, world_size=2)
    assert not first.complete and not shared.exists()
    second = run_cuts([root], shared, CutsConfig(), rank=1, world_size=2)
    assert second.complete
    expected = pq.read_table(one).to_pylist()
    assert pq.read_table(two).to_pylist() == expected == pq.read_table(shared).to_pylist()


def test_manifest_reads_with_pandas_and_duckdb(tmp_path, corpus):
    import duckdb
    import pandas as pd

    out = tmp_path / "m.parquet"
    run_cuts([corpus[0] / "short.mp4"], out, CutsConfig())
    df = pd.read_parquet(out)
    assert list(df["start_frame"]) == [0, 30] and list(df["start_levels"].iloc[1]) == ["native", "15fps", "8fps"]
    [(n, frames)] = duckdb.sql(f"select count(*), sum(num_frames) from '{out}' where status = 'ok'").fetchall()
    assert (n, frames) == (2, 60)


def test_options_change_the_clips(tmp_path, corpus):
    root, _ = corpus
    out = tmp_path / "split.parquet"
    res = CliRunner().invoke(app, ["curate", "cuts", str(root / "static.mp4"), "--out", str(out),
                                   "--max-length", "1.5", "--no-progress"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(out).to_pylist()
    assert [r["start_cause"] for r in rows] == ["video_start", "split", "split"]
    assert [r["num_frames"] for r in rows] == [32, 32, 32]


def test_user_mistakes_are_one_line_errors(tmp_path, corpus):
    for args, words in [(["--levels", "native,fast"], "--levels"), (["--thresholds", "20,8"], "2 values for 3"),
                        (["--levels", "15,15fps"], "twice"),
                        (["--rank", "2", "--world-size", "2"], "--rank")]:
        res = CliRunner().invoke(app, ["curate", "cuts", str(corpus[0] / "static.mp4"),
                                       "--out", str(tmp_path / "x.parquet"), *args])
        assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output
    (tmp_path / "nothing").mkdir()
    res = CliRunner().invoke(app, ["curate", "cuts", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.parquet")])
    assert res.exit_code == 2 and "no videos found" in res.output and not (tmp_path / "x.parquet").exists()


def test_interrupted_run_resumes_to_the_same_manifest(tmp_path, corpus, bad_inputs, monkeypatch):
    root, _ = corpus
    inputs = [root, bad_inputs / "empty.mp4"]
    reference = tmp_path / "ref.parquet"
    run_cuts(inputs, reference, CutsConfig())

    real = cuts_mod.CutsStage.process
    calls: list[str] = []

    def stop_at_third(self, payload):
        calls.append(payload)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, payload)

    out = tmp_path / "run.parquet"
    monkeypatch.setattr(cuts_mod.CutsStage, "process", stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        run_cuts(inputs, out, CutsConfig())
    assert not out.exists() and (tmp_path / "run.parquet.parts").is_dir()

    calls.clear()
    monkeypatch.setattr(cuts_mod.CutsStage, "process", lambda self, p: (calls.append(p), real(self, p))[1])
    summary = run_cuts(inputs, out, CutsConfig())
    assert summary.complete and len(calls) == 3  # 5 videos, 2 finished before the interruption
    assert pq.read_table(out).to_pylist() == pq.read_table(reference).to_pylist()
    assert not (tmp_path / "run.parquet.parts").exists()


def test_leftover_parts_of_other_inputs_stay_out(tmp_path, corpus, monkeypatch):
    root, _ = corpus
    out = tmp_path / "clips.parquet"
    real = cuts_mod.CutsStage.process

    def stop_after_static(self, payload):
        if payload.endswith("static.mp4"):
            raise KeyboardInterrupt
        return real(self, payload)

    monkeypatch.setattr(cuts_mod.CutsStage, "process", stop_after_static)
    with pytest.raises(KeyboardInterrupt):  # mixed.mp4 is written to a part, then the run stops
        run_cuts([root / "mixed.mp4", root / "static.mp4"], out, CutsConfig())
    monkeypatch.setattr(cuts_mod.CutsStage, "process", real)
    run_cuts([root / "slowpan.mp4"], out, CutsConfig())
    assert {r["video_path"].rsplit("/", 1)[-1] for r in read_manifest(out).to_pylist()} == {"slowpan.mp4"}


def test_read_ahead_hands_over_every_frame_in_order_and_stops_with_its_caller():
    """The decode's read-ahead thread: same items in order, the producer's error after the items
    before it, and a caller that stops early stops the helper (no thread left running)."""
    import threading

    from svdcli.video.decode import read_ahead

    assert list(read_ahead(iter(range(103)), depth=16)) == list(range(103))

    def failing():
        yield from range(10)
        raise ValueError("broken packet")

    got = []
    with pytest.raises(ValueError, match="broken packet"):
        for x in read_ahead(failing(), depth=8):
            got.append(x)
    assert got == list(range(10))

    pulled = []

    def endless():
        while True:
            pulled.append(1)
            yield len(pulled)

    for x in read_ahead(endless(), depth=8):
        if x == 5:
            break
    assert not any(t.name == "decode-read-ahead" for t in threading.enumerate())
    assert len(pulled) <= 5 + 8 + 4 + 1  # at most a queue's worth ahead


def test_slow_levels_measure_their_spans_while_frames_arrive(monkeypatch):
    """A slow level's span distances are computed during the decode, each as soon as its later
    sample is in; only the last span's wait for the end of the video, and none is computed twice."""
    from svdcli.curate.scorers import cascade as cascade_mod
    from svdcli.curate.scorers.cascade import LevelSpec, SlowLevel, aligned_distance

    shot = render_shot(Shot(90, seed=4, speed=(1.5, 0.5)), 36, 64)  # (90, 36, 64, 3)
    times = [k / 30 for k in range(90)]
    level = SlowLevel(LevelSpec("15fps", 15.0, 3.0, 0.4), 8.0)
    for i in range(0, 90, 32):  # the cascade's batches
        level.feed_many(times[i:i + 32], shot[i:i + 32])
        assert len(level._cross) == max(0, len(level.thumbs) - level.span)
    thumbs, s = level.thumbs, level.span
    n = len(thumbs)
    expected = [aligned_distance(thumbs[max(k - s, 0)], thumbs[min(k + s, n - 1)]) for k in range(n - s)]
    assert level._cross == pytest.approx(expected, rel=1e-12)
    calls = []
    monkeypatch.setattr(cascade_mod, "aligned_distance", lambda a, b: calls.append(1) or aligned_distance(a, b))
    level.boundaries(Cascade(CascadeConfig(default_levels())).native)
    assert len(calls) >= s  # the last span's distances, then the transitions' (if any)
    assert len(calls) < n  # not every distance again


def test_shot_edges_answer_as_comparing_every_sample_both_ways():
    """The transition's edges from as few comparisons as needed: the same edges as the full
    definition (every sample tested against both ends), on random closeness patterns."""
    from svdcli.curate.scorers.cascade import shot_edges

    def every(a, b, old, new):
        olds = [j for j in range(a, b + 1) if old[j]]
        news = [j for j in range(a, b + 1) if new[j]]
        last_old = max([j for j in olds if j < (min(news) if news else b + 1)] or [a])
        return last_old, min([j for j in news if j > last_old] or [b])

    rng = np.random.default_rng(0)
    asked = full = 0
    for _ in range(3000):
        a = int(rng.integers(0, 5))
        b = a + int(rng.integers(0, 12))
        p_old, p_new = rng.random(2)
        old, new = rng.random(b + 1) < p_old, rng.random(b + 1) < p_new
        if rng.random() < 0.5:  # as in a cascade: each end is close to itself
            old[a] = new[b] = True
        calls = []
        got = shot_edges(a, b, lambda j: calls.append(j) or old[j], lambda j: calls.append(j) or new[j])
        assert got == every(a, b, old, new), (a, b, old.tolist(), new.tolist())
        asked, full = asked + len(calls), full + 2 * (b - a + 1)
    assert asked < 0.4 * full  # 0.32 here: each search stops at its answer
