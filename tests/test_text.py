"""Text stage: union area on a mask, the shipped DBNet on rendered text of known area, the stage and CLI."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from clip_rows import clip_rows
from svdcli.cli.main import app
from svdcli.curate.frames import frame_times
from svdcli.curate.stages.text import DBNetDetector, resolve_detector, run_text, text_area
from svdcli.video.seek import analysis_size
from svdcli.errors import MissingWeightsError, SvdError
from svdcli.manifest.io import read_manifest, table_from_rows, write_manifest
from svdcli.video.synth import Shot, texture, write_video

FPS = 12.0
CLIP_COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
                "num_frames", "fps", "width", "height", "status"]


def render_text(frame: np.ndarray, text: str, scale: float, lines: int, y0: int) -> float:
    """Draw `lines` lines of outlined text; return the true text area (union of tight line boxes)."""
    import cv2

    h, w = frame.shape[:2]
    thick = max(1, int(scale * 2))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x = max(2, (w - tw) // 2)
    truth = np.zeros((h, w), np.uint8)
    for k in range(lines):
        y = y0 + int(k * th * 1.9) + th
        line = np.zeros((h, w), np.uint8)
        cv2.putText(line, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 1, thick + 2, cv2.LINE_AA)
        bx, by, bw, bh = cv2.boundingRect(line)
        truth[by:by + bh, bx:bx + bw] = 1
        cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick + 2, cv2.LINE_AA)
        cv2.putText(frame, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (10, 10, 10), thick, cv2.LINE_AA)
    return float(truth.mean())


@pytest.fixture(scope="module")
def dbnet():
    return DBNetDetector(threads=2)


def test_overlapping_boxes_count_once():
    a = np.array([[0, 0], [50, 0], [50, 50], [0, 50]])
    b = np.array([[25, 0], [75, 0], [75, 50], [25, 50]])
    area = text_area([a, b], (100, 100))
    assert abs(area - 76 * 51 / 10000) < 0.005  # the union, not 0.5
    assert text_area([], (100, 100)) == 0.0


def test_frame_times_stay_inside_the_clip():
    clip = {"start_time": 2.0, "end_time": 4.0, "fps": 10.0}
    fml = frame_times(clip, "fml")
    assert len(fml) == 3 and all(2.0 <= t < 4.0 for t in fml)
    assert fml[-1] > 3.9 - 1e-9  # inside the last frame (3.9 .. 4.0)
    rate = frame_times(clip, "2fps")
    assert len(rate) == 4 and all(2.0 <= t < 4.0 for t in rate)
    with pytest.raises(SvdError):
        frame_times(clip, "often")
    assert analysis_size(1920, 1080, 640, upscale=False) == (640, 360)
    assert analysis_size(160, 96, 640, upscale=False) == (160, 96)  # never upscaled


@pytest.mark.parametrize("text,scale,lines", [("Breaking News", 0.5, 1), ("Breaking News", 0.7, 2),
                                              ("SALE 50% OFF", 0.6, 2), ("Live 24/7", 1.2, 2)])
def test_dbnet_measures_known_text_area(dbnet, text, scale, lines):
    frame = texture(3, 192, 320).copy()
    truth = render_text(frame, text, scale, lines, 30)
    area = text_area(dbnet.detect(frame[None])[0], frame.shape)
    assert abs(area - truth) < 0.025, (area, truth)  # within 2.5 percentage points


def test_dbnet_text_free_frames_are_clean(dbnet):
    frames = np.stack([texture(seed, 192, 320) for seed in range(4)])
    areas = [text_area(b, (192, 320)) for b in dbnet.detect(frames)]
    assert max(areas) < 0.01


def test_dbnet_batch_equals_one_by_one(dbnet):
    frames = np.stack([texture(s, 192, 320).copy() for s in range(3)])
    render_text(frames[1], "Hello World", 0.7, 2, 40)
    batched = [text_area(b, (192, 320)) for b in dbnet.detect(frames)]
    single = [text_area(dbnet.detect(f[None])[0], (192, 320)) for f in frames]
    assert batched == pytest.approx(single, abs=1e-3)
    assert batched[1] > 0.05 and batched[0] < 0.01


@pytest.fixture(scope="module")
def text_manifest(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text")
    video = tmp / "v.mp4"
    write_video(video, [Shot(24, seed=1), Shot(24, seed=2, text="BREAKING NEWS", text_area=0.1)],
                size=(320, 192), fps=FPS)
    rows = clip_rows(video, [(0, 24), (24, 48)], FPS, (320, 192))
    rows += clip_rows(tmp / "missing.mp4", [(0, 24)], FPS, (320, 192))
    path = write_manifest(table_from_rows(rows, CLIP_COLUMNS), tmp / "clips.parquet")
    return path


def test_stage_scores_text_clip_and_records_detector(text_manifest, tmp_path):
    result, out = run_text(text_manifest, tmp_path / "out.parquet", detector="dbnet")
    rows = {r["clip_id"]: r for r in read_manifest(out).to_pylist()}
    clean, texty, broken = rows.values()
    assert clean["text_area"] < 0.01
    assert texty["text_area"] > 0.07  # the paper's threshold would drop it
    assert {clean["text_detector"], texty["text_detector"]} == {"dbnet"}
    assert broken["text_area"] is None and "not found" in broken["text_error"]
    assert result.errors == 1 and not (tmp_path / "out.parquet.parts").exists()


def test_auto_prefers_craft_when_its_weights_exist(tmp_path, monkeypatch, text_manifest):
    torch = pytest.importorskip("torch")
    from easyocr.craft import CRAFT

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SVD_EASYOCR_DIR", raising=False)
    monkeypatch.delenv("EASYOCR_MODULE_PATH", raising=False)
    assert resolve_detector("auto") == "dbnet"
    with pytest.raises(MissingWeightsError, match="craft_mlt_25k.pth"):
        resolve_detector("craft")
    torch.manual_seed(0)
    (tmp_path / "w").mkdir()
    torch.save(CRAFT().state_dict(), tmp_path / "w" / "craft_mlt_25k.pth")  # random weights: plumbing only
    monkeypatch.setenv("SVD_EASYOCR_DIR", str(tmp_path / "w"))
    assert resolve_detector("auto") == "craft"
    _, out = run_text(text_manifest, tmp_path / "out.parquet", size=160)
    table = read_manifest(out).to_pylist()
    assert [r["text_detector"] for r in table[:2]] == ["craft", "craft"]
    assert all(0.0 <= r["text_area"] <= 1.0 for r in table[:2])


def test_cli_names_the_detector_and_explains_missing_craft(text_manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SVD_EASYOCR_DIR", raising=False)
    monkeypatch.delenv("EASYOCR_MODULE_PATH", raising=False)
    runner = CliRunner()
    out = tmp_path / "o.parquet"
    ok = runner.invoke(app, ["curate", "text", "-m", str(text_manifest), "-o", str(out), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    assert "dbnet" in flat(ok.output) and "1 have text_area > 0.07" in flat(ok.output)
    bad = runner.invoke(app, ["curate", "text", "-m", str(text_manifest), "-o", str(out), "--detector", "craft"])
    assert bad.exit_code == 2
    assert "craft_mlt_25k.pth" in flat(bad.output) and "SVD_EASYOCR_DIR" in flat(bad.output)
    assert "Traceback" not in bad.output


def test_slide_recording_is_text_heavy(testdata, tmp_path):
    video = testdata / "video2dataset" / "test_video.mp4"
    rows = clip_rows(video, [(300, 600)], 30.0, (1920, 1080))
    manifest = write_manifest(table_from_rows(rows, CLIP_COLUMNS), tmp_path / "m.parquet")
    _, out = run_text(manifest, tmp_path / "o.parquet", detector="dbnet")
    assert read_manifest(out).column("text_area")[0].as_py() > 0.07


def test_worker_processes_give_the_same_scores(text_manifest, tmp_path):
    _, one = run_text(text_manifest, tmp_path / "one.parquet", detector="dbnet")
    _, two = run_text(text_manifest, tmp_path / "two.parquet", detector="dbnet", workers=2)
    assert read_manifest(one).to_pylist() == read_manifest(two).to_pylist()


def flat(text: str) -> str:
    """CLI output with the console's line wrapping undone."""
    return " ".join(text.split())


def test_unknown_recipe_setting_is_a_clear_error(text_manifest, tmp_path):
    with pytest.raises(SvdError, match="unknown text setting.*max_area.*known: detector"):
        run_text(text_manifest, tmp_path / "o.parquet", max_area=0.07)


class _Payload:
    """Unpickling this runs code: what a tampered weights file would do."""

    def __reduce__(self):
        return (print, ("payload ran",))


def test_craft_weights_are_read_as_tensors_only(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from easyocr.craft import CRAFT

    from svdcli.curate.stages.text import load_craft

    with torch.device("meta"):
        layout = CRAFT().state_dict()
    gen = torch.Generator().manual_seed(0)
    weights = {k: torch.rand(v.shape, generator=gen) if v.is_floating_point() else torch.zeros(v.shape, dtype=v.dtype)
               for k, v in layout.items()}
    # saved as easyocr's DataParallel file is: "module."-prefixed keys
    torch.save({f"module.{k}": v for k, v in weights.items()}, tmp_path / "craft.pth")
    loaded = load_craft(tmp_path / "craft.pth").state_dict()
    assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)

    torch.save({**weights, "extra": _Payload()}, tmp_path / "tampered.pth")
    with pytest.raises(SvdError, match=r"tampered\.pth: not a CRAFT state dict of plain tensors"):
        load_craft(tmp_path / "tampered.pth")
    assert "payload ran" not in capsys.readouterr().out
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(SvdError, match=r"other\.pth: not the weights of easyocr's CRAFT"):
        load_craft(tmp_path / "other.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "craft.pth").read_bytes()[:1000])
    with pytest.raises(SvdError, match=r"cut\.pth"):
        load_craft(tmp_path / "cut.pth")
