"""`svd pack`: synthetic clips -> shards -> plain webdataset / tar, frame accuracy, skips, resume."""
from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from svdcli.errors import SvdError
from svdcli.manifest.io import table_from_rows, write_manifest
from svdcli.shards.micro_conditioning import MotionBuckets, fps_id_for
from svdcli.shards.frames import cover_size, decode_mp4, decode_npy
from svdcli.shards.pack import PackConfig, run_pack
from svdcli.video.probe import video_id
from svdcli.video.synth import Shot, render_shot, write_frames

SRC_W, SRC_H, SRC_FPS = 160, 96, 24.0
SIZE = (64, 96)  # (H, W) of packed frames
COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
           "num_frames", "fps", "width", "height", "status", "motion_score", "caption", "keep", "drop_reason"]


def make_corpus(folder: Path, videos: int = 3, clips_per_video: int = 2, clip_frames: int = 24,
                corrupt: bool = False) -> tuple[Path, dict[str, np.ndarray]]:
    """Videos panning at 3 px/frame cut into clips; returns the manifest and each video's frames."""
    rows, sources = [], {}
    for v in range(videos):
        frames = render_shot(Shot(clips_per_video * clip_frames, seed=v, speed=(3.0, 1.0)), SRC_H, SRC_W)
        path = write_frames(folder / f"v{v}.mp4", frames, SRC_FPS, crf=12)
        sources[str(path.resolve())] = frames
        for c in range(clips_per_video):
            a, b = c * clip_frames, (c + 1) * clip_frames
            rows.append(_row(path, a, b, motion=float(v), caption=f"video {v} clip {c}", keep=v != 1 or c != 1))
    if corrupt:
        bad = folder / "broken.mp4"
        bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 4000)
        rows.append(_row(bad, 0, clip_frames, motion=1.0, caption="broken", keep=True))
    manifest = write_manifest(table_from_rows(rows, COLUMNS), folder / "clips.parquet")
    return manifest, sources


def _row(path: Path, a: int, b: int, motion: float, caption: str, keep: bool) -> dict:
    vid = video_id(path)
    return dict(clip_id=f"{vid}_{a}_{b}", video_id=vid, video_path=str(Path(path).resolve()),
                start_time=a / SRC_FPS, end_time=b / SRC_FPS, start_frame=a, end_frame=b, num_frames=b - a,
                fps=SRC_FPS, width=SRC_W, height=SRC_H, status="ok", motion_score=motion, caption=caption,
                keep=keep, drop_reason=None if keep else "motion")


def expected_frame(source: np.ndarray, index: int) -> np.ndarray:
    """What a packed frame should look like: source frame resized to cover SIZE, center cropped."""
    import cv2

    w, h = cover_size(SRC_W, SRC_H, *SIZE)
    small = cv2.resize(source[index], (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    y0, x0 = (h - SIZE[0]) // 2, (w - SIZE[1]) // 2
    return small[y0:y0 + SIZE[0], x0:x0 + SIZE[1]]


def read_samples(out: Path) -> dict[str, dict]:
    """Every sample of every shard, read with plain webdataset (no svdcli code)."""
    import webdataset as wds

    urls = sorted(str(p) for p in out.glob("*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}


def shard_contents(out: Path) -> dict[str, dict]:
    """Per shard: key -> (json, txt, npy bytes). mp4 bytes are left out: the encoder's output
    is not byte-stable across processes, its decoded frames are checked against npy above."""
    contents = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            contents[shard.name] = {m.name: tar.extractfile(m).read() for m in tar.getmembers()
                                    if not m.name.endswith(".mp4")}
    return contents


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pack")
    manifest, sources = make_corpus(folder, corrupt=True)
    cfg = PackConfig(size=SIZE, frames=8, min_frames=4, fps=8.0, shard_size=2, format="both")
    summary = run_pack(manifest, folder / "shards", cfg, workers=2, progress=False)
    return folder, manifest, sources, summary


def test_round_trip_frames_match_source_at_the_right_times(packed):
    folder, _, sources, summary = packed
    samples = read_samples(folder / "shards")
    assert len(samples) == summary.stats["samples"] == 5  # 6 clips, 1 not kept; the broken one skipped
    for key, s in samples.items():
        meta = json.loads(s["json"])
        src = sources[meta["source"]]
        mp4, npy = decode_mp4(s["mp4"]), decode_npy(s["npy"])
        assert mp4.shape == npy.shape == (8, *SIZE, 3)  # 1 s clips at 8 fps
        assert meta["times"] == pytest.approx([meta["start_time"] + k / 8 for k in range(8)])
        for k, t in enumerate(meta["times"]):
            want = round(t * SRC_FPS)  # the 24 fps source frame shown at t
            errors = {i: np.abs(npy[k].astype(np.float32) - expected_frame(src, i)).mean()
                      for i in (want - 1, want, want + 1) if 0 <= i < len(src)}
            assert min(errors, key=errors.get) == want, f"{key} frame {k}: wrong source frame {errors}"
            # the source H.264 pass (4:2:0 chroma on a busy colour texture) costs ~6 levels at full
            # size, swscale vs cv2 area filters ~3; a neighbouring frame (3 px pan) is ~125 off
            assert errors[want] < 8.0
            assert np.abs(mp4[k].astype(np.float32) - npy[k]).mean() < 8.0  # crf 18, 4:2:0 chroma


def test_metadata_and_conditioning_are_intact(packed):
    folder, _, _, _ = packed
    for key, s in read_samples(folder / "shards").items():
        meta = json.loads(s["json"])
        assert s["txt"].decode() == meta["caption"] and meta["caption"].startswith("video ")
        assert meta["key"] == key and "." not in key
        assert meta["fps"] == 8.0 and meta["fps_id"] == 7 and meta["source_fps"] == SRC_FPS
        assert meta["motion_bucket_id"] == min(255, round(32 * meta["scores"]["motion_score"]))
    index = __import__("pyarrow.parquet", fromlist=["x"]).read_table(folder / "shards" / "index.parquet")
    for row in index.to_pylist():
        with tarfile.open(folder / "shards" / row["shard"]) as tar:
            assert f"{row['key']}.mp4" in tar.getnames()


def test_shards_are_plain_tar_files(packed):
    folder, _, _, _ = packed
    names = []
    for shard in sorted((folder / "shards").glob("*.tar")):
        listing = subprocess.run(["tar", "tf", str(shard)], capture_output=True, text=True, check=True)
        names += listing.stdout.split()
    exts = sorted({n.split(".", 1)[1] for n in names})
    assert exts == ["json", "mp4", "npy", "txt"]
    assert len(names) == 5 * 4
    assert [p.name for p in sorted((folder / "shards").glob("*.tar"))] == ["000000.tar", "000001.tar", "000002.tar"]


def test_corrupt_source_is_skipped_and_counted(packed):
    folder, _, _, summary = packed
    stats = json.loads((folder / "shards" / "stats.json").read_text())
    assert stats["skipped_by_reason"] == {"decode_error": 1}
    (skip,) = stats["skipped_clips"]
    assert skip["clip_id"].endswith("_0_24") and "broken.mp4" in skip["reason"]
    assert stats["selected"] == 6 and stats["samples"] == 5
    assert not list((folder / "shards").glob("*.tmp"))


def test_short_clips_are_skipped_with_their_reason(tmp_path):
    manifest, _ = make_corpus(tmp_path, videos=1, clips_per_video=2, clip_frames=6)
    cfg = PackConfig(size=SIZE, frames=8, min_frames=4, fps=8.0, shard_size=4)
    summary = run_pack(manifest, tmp_path / "shards", cfg, workers=1, progress=False)
    # 6 frames at 24 fps = 0.25 s -> 2 frames at 8 fps < 4
    assert summary.stats["samples"] == 0 and summary.stats["skipped_by_reason"] == {"too_short": 2}
    assert "2 frames" in summary.stats["skipped_clips"][0]["reason"]


def test_source_slower_than_fps_keeps_its_rate(tmp_path):
    manifest, _ = make_corpus(tmp_path, videos=1, clips_per_video=1, clip_frames=12)
    cfg = PackConfig(size=SIZE, frames=20, min_frames=4, fps=30.0, shard_size=4, format="npy")
    run_pack(manifest, tmp_path / "shards", cfg, workers=1, progress=False)
    (sample,) = read_samples(tmp_path / "shards").values()
    meta = json.loads(sample["json"])
    assert meta["fps"] == SRC_FPS and meta["fps_id"] == 23 and meta["num_frames"] == 12
    frames = decode_npy(sample["npy"])
    assert len({f.tobytes() for f in frames}) == 12  # no frame repeated


def test_rerun_resumes_and_rewrites_the_same_samples(packed, tmp_path):
    folder, manifest, _, _ = packed
    out = tmp_path / "shards"
    cfg = PackConfig(size=SIZE, frames=8, min_frames=4, fps=8.0, shard_size=2, format="both")
    first = run_pack(manifest, out, cfg, workers=2, progress=False)
    reference = shard_contents(out)
    assert shard_contents(out) == shard_contents(folder / "shards")  # same input, same samples
    (out / "000001.tar").unlink()  # as if killed while writing shard 1
    (out / ".pack" / "000001.json").unlink()
    (out / "000002.tar.tmp").write_bytes(b"half a shard")
    again = run_pack(manifest, out, cfg, workers=1, progress=False)
    assert (again.shards_written, again.shards_resumed) == (1, 2)
    assert shard_contents(out) == reference
    assert again.stats["samples"] == first.stats["samples"]


def test_other_settings_do_not_mix_with_existing_shards(packed, tmp_path):
    _, manifest, _, _ = packed
    out = tmp_path / "shards"
    run_pack(manifest, out, PackConfig(size=SIZE, frames=4, min_frames=4, fps=8.0, shard_size=3), progress=False)
    other = PackConfig(size=SIZE, frames=4, min_frames=4, fps=4.0, shard_size=3)
    with pytest.raises(SvdError, match="--overwrite"):
        run_pack(manifest, out, other, progress=False)
    summary = run_pack(manifest, out, other, overwrite=True, workers=1, progress=False)
    assert {json.loads(s["json"])["fps"] for s in read_samples(out).values()} == {4.0}
    assert summary.shards_written == 2


def test_cli_user_mistakes_are_one_line_errors(tmp_path):
    from svdcli.cli.main import app

    rows = [_row(tmp_path / "x.mp4", 0, 24, 1.0, "x", True)]
    no_keep = write_manifest(table_from_rows(rows, [c for c in COLUMNS if c not in ("keep", "drop_reason")]),
                             tmp_path / "nokeep.parquet")
    runner = CliRunner()
    result = runner.invoke(app, ["pack", "--manifest", str(no_keep), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "svd curate filter" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["pack", "-m", str(no_keep), "-o", str(tmp_path / "s"), "--size", "255x384", "--all"])
    assert result.exit_code == 2 and "even" in result.output
    result = runner.invoke(app, ["pack", "-m", str(no_keep), "-o", str(tmp_path / "s"), "--motion-map", "log", "--all"])
    assert result.exit_code == 2 and "--motion-map must be one of" in result.output
    result = runner.invoke(app, ["pack", "-m", str(tmp_path / "missing.parquet"), "-o", str(tmp_path / "s")])
    assert result.exit_code == 2 and "not found" in result.output
    help_text = runner.invoke(app, ["pack", "--help"]).output
    assert "height 256" in help_text and "width" in help_text


def test_fps_id_and_motion_bucket_mapping():
    assert [fps_id_for(f) for f in (8, 7.5, 24, 29.97, 1, 0.4)] == [7, 7, 23, 29, 0, 0]
    linear = MotionBuckets("linear", 32.0)
    buckets = [linear(s) for s in (0.0, 0.1, 1.0, 4.0, 7.9, 8.0, 50.0)]
    assert buckets == sorted(buckets) and buckets[0] == 0 and buckets[3] == 128 and buckets[-1] == 255
    assert linear(None) == 127 and linear(float("nan")) == 127
    pct = MotionBuckets("percentile", corpus=[0.1, 0.2, 0.2, 5.0, None])
    assert [pct(s) for s in (0.1, 0.2, 5.0)] == [0, 128, 255]
    with pytest.raises(ValueError):
        MotionBuckets("log")


def test_cli_packs_and_reports_skips(tmp_path):
    from svdcli.cli.main import app

    manifest, _ = make_corpus(tmp_path, videos=1, clips_per_video=2, clip_frames=12, corrupt=True)
    args = ["pack", "-m", str(manifest), "-o", str(tmp_path / "s"), "--size", "64x96", "--frames", "6",
            "--fps", "12", "-w", "1", "--format", "npy"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 samples of 3 selected clips" in result.output and "decode_error: 1" in result.output
    # 12 frames at 24 fps = 0.5 s -> 6 frames at 12 fps
    assert [decode_npy(s["npy"]).shape for s in read_samples(tmp_path / "s").values()] == [(6, *SIZE, 3)] * 2


def test_ranks_share_a_pack_and_the_last_one_writes_the_index(packed, tmp_path):
    _, manifest, _, _ = packed
    out = tmp_path / "shards"
    cfg = PackConfig(size=SIZE, frames=4, min_frames=4, fps=8.0, shard_size=2, format="npy")
    first = run_pack(manifest, out, cfg, workers=1, rank=1, world_size=2, progress=False)
    assert [p.name for p in out.glob("*.tar")] == ["000001.tar"]
    assert not first.complete and not (out / "index.parquet").exists()
    last = run_pack(manifest, out, cfg, workers=1, rank=0, world_size=2, progress=False)
    assert last.complete and last.shards_written == 2 and last.stats["samples"] == 5


def test_display_rotation_is_applied_before_the_crop(testdata, tmp_path):
    import av

    from svdcli.video.probe import probe
    from svdcli.video.seek import read_frames_at

    info = probe(testdata / "pyscenedetect" / "issue-134-rotate.mp4")  # 1280x544 coded, shown turned 90 degrees
    assert info.rotation == 90
    row = {**_row(Path(info.path), 0, 24, 1.0, "rotated", True), "fps": info.fps, "width": info.width,
           "height": info.height, "end_time": 1.0}
    manifest = write_manifest(table_from_rows([{**row, "rotation": info.rotation}], COLUMNS + ["rotation"]),
                              tmp_path / "rot.parquet")
    cfg = PackConfig(size=(384, 160), frames=2, min_frames=2, fps=2.0, shard_size=1, format="npy")
    run_pack(manifest, tmp_path / "shards", cfg, workers=1, progress=False)
    (sample,) = read_samples(tmp_path / "shards").values()
    packed = decode_npy(sample["npy"])[0].astype(np.float32)  # (384, 160, 3): portrait, as displayed
    disp_w, disp_h = cover_size(info.height, info.width, 384, 160)  # displayed 544x1280 -> 163x384
    coded = read_frames_at(info.path, [0.0], size=(disp_h, disp_w))[0]  # (163, 384, 3), sideways
    with av.open(info.path) as container:  # PyAV's own reading of the display matrix (degrees CCW)
        ccw = next(container.decode(video=0)).rotation
    upright = np.rot90(coded, k=round(ccw / 90))  # -90 CCW = a quarter turn clockwise: (384, 163, 3)
    y0, x0 = (upright.shape[0] - 384) // 2, (upright.shape[1] - 160) // 2
    assert np.abs(packed - upright[y0:y0 + 384, x0:x0 + 160]).mean() < 2.0
    assert np.abs(packed - np.rot90(coded, k=-round(ccw / 90))[y0:y0 + 384, x0:x0 + 160]).mean() > 10.0


def test_a_failing_clip_does_not_take_its_video_neighbours_down(monkeypatch):
    from svdcli.shards import samples

    clips = [_row(Path("/v.mp4"), a, a + 12, 1.0, "c", True) for a in (0, 12, 24)]
    bad_time = clips[1]["start_time"]

    def fake_read(clip, times, cfg):  # the shared pass fails because of clip 1's frames
        if bad_time in times:
            raise samples.ClipSkipped("decode_error", "corrupt packet")
        return np.zeros((len(times), *cfg.size, 3), np.uint8)

    monkeypatch.setattr(samples, "read_frames", fake_read)
    got = samples.video_clip_frames(clips, PackConfig(size=SIZE, frames=4, min_frames=4, fps=8.0))
    assert isinstance(got[clips[1]["clip_id"]], samples.ClipSkipped)
    assert [got[c["clip_id"]][0].shape for c in (clips[0], clips[2])] == [(4, *SIZE, 3)] * 2
