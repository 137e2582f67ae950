"""Caption stage, CoCa engine, with a tiny CoCa config (random weights): captions are gibberish but must be
plumbed right. The video-language model, the summary and the caption columns: test_caption_vlm.py."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from clip_rows import clip_rows  # noqa: E402
from svdcli.cli.main import app  # noqa: E402
from svdcli.curate.scorers.captioning.coca import clean_caption  # noqa: E402
from svdcli.curate.stages.caption import CaptionConfig, run_caption  # noqa: E402
from svdcli.curate.scorers.open_clip_models import clip_read_size  # noqa: E402
from svdcli.demo.tiny_models import write_tiny_coca  # noqa: E402  (the demo's stand-in)
from svdcli.errors import MissingWeightsError, SvdError  # noqa: E402
from svdcli.manifest.io import read_manifest, table_from_rows, write_manifest  # noqa: E402
from svdcli.video.seek import read_frames_at  # noqa: E402
from svdcli.video.synth import Shot, write_video  # noqa: E402

FPS = 12.0
COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
           "num_frames", "fps", "width", "height", "status"]
GREEDY = {"generation": "top_k", "top_k": 1, "seq_len": 10}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_coca(tmp_path_factory.mktemp("tiny_coca"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("caption_videos")
    video = d / "v.mp4"
    # moving shots: a clip's middle frame is not its first
    write_video(video, [Shot(12, seed=s, speed=(3.0, 2.0)) for s in range(4)], size=(96, 64), fps=FPS)
    rows = clip_rows(video, [(a, a + 12) for a in (0, 12, 24, 36)], FPS, (96, 64))
    rows.append({**rows[0], "clip_id": "broken", "video_path": str(d / "gone.mp4")})
    return write_manifest(table_from_rows(rows, COLUMNS), d / "clips.parquet")


def test_clean_caption_strips_special_tokens():
    raw = "<start_of_text>a dog running on the beach . <end_of_text>!!!! junk"
    assert clean_caption(raw) == "a dog running on the beach"


def test_stage_writes_captions_and_model_and_error_rows(tiny, manifest, tmp_path):
    result, out = run_caption(manifest, tmp_path / "out.parquet", **tiny, **GREEDY)
    rows = read_manifest(out).to_pylist()
    good, broken = rows[:4], rows[4]
    assert all(r["caption"] and "<" not in r["caption"] for r in good)
    assert {r["caption_model"] for r in good} == {"coca=tiny-coca:tiny-coca.pt"}
    assert all(r["caption_coca"] == r["caption"] and r["caption_source"] == "coca" for r in good)
    assert all(r["caption_words"] == len(r["caption"].split()) and 0 < r["caption_tokens"] < 10 for r in good)
    assert broken["caption"] is None and "not found" in broken["caption_error"]
    assert result.errors == 1


def test_greedy_captions_repeat_and_do_not_depend_on_batching(tiny, manifest, tmp_path):
    _, a = run_caption(manifest, tmp_path / "a.parquet", batch_size=1, **tiny, **GREEDY)
    _, b = run_caption(manifest, tmp_path / "b.parquet", batch_size=4, **tiny, **GREEDY)
    ca, cb = (read_manifest(p).column("caption").to_pylist() for p in (a, b))
    assert ca == cb
    assert len(set(ca[:4])) > 1  # different frames, different captions


BEAM = {"generation": "beam_search", "num_beams": 2, "num_beam_groups": 1, "seq_len": 7, "min_seq_len": 2}


def direct_captions(tiny, rows, settings):
    """open_clip's CoCa `generate` called directly on each clip's middle frame, decoded to text."""
    net = open_clip.create_model("tiny-coca", pretrained=tiny["pretrained"]).eval()
    cfg = net.visual.preprocess_cfg
    side = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    out = []
    for row in rows:
        size = clip_read_size(row["width"], row["height"], side)
        frame = read_frames_at(row["video_path"], [(row["start_time"] + row["end_time"]) / 2], size=size)
        top, left = (frame.shape[1] - side) // 2, (frame.shape[2] - side) // 2  # centre crop
        x = torch.from_numpy(frame[:, top:top + side, left:left + side].copy()).permute(0, 3, 1, 2).float() / 255
        x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        kw = {k: v for k, v in settings.items() if k != "generation"}
        with torch.no_grad():
            tokens = net.generate(x, generation_type=settings["generation"], **kw)[0]
        text = open_clip.decode(tokens).split("<end_of_text>")[0].replace("<start_of_text>", "")
        out.append(" ".join(text.split()).removesuffix(" ."))
    return out


@pytest.mark.parametrize("settings", [BEAM, GREEDY], ids=["beam_search", "greedy"])
def test_captions_are_what_the_model_generates_for_each_clips_middle_frame(tiny, manifest, tmp_path, settings):
    _, out = run_caption(manifest, tmp_path / "out.parquet", batch_size=4, **tiny, **settings)
    rows = read_manifest(out).to_pylist()[:4]
    expected = direct_captions(tiny, rows, settings)
    assert [r["caption"] for r in rows] == expected
    assert len(set(expected)) > 1  # the model tells these frames apart, so a wrong frame would show


def test_bad_settings_and_missing_weights_are_clear(tiny, manifest, tmp_path, monkeypatch):
    with pytest.raises(SvdError, match="--generation"):
        CaptionConfig(generation="greedy").check()
    with pytest.raises(SvdError, match="multiple of --num-beam-groups"):
        CaptionConfig(num_beams=4, num_beam_groups=3).check()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="laion/mscoco_finetuned_CoCa-ViT-L-14-laion2B-s13B-b90k"):
        run_caption(manifest, tmp_path / "o.parquet")
    result = CliRunner().invoke(app, ["curate", "caption", "-m", str(manifest), "-o", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2 and "--pretrained" in flat(result.output) and "Traceback" not in result.output


def test_cli_captions_with_local_files(tiny, manifest, tmp_path):
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(app, ["curate", "caption", "-m", str(manifest), "-o", str(out), "--model",
                                      tiny["model"], "--pretrained", tiny["pretrained"], "--generation", "top_k",
                                      "--seq-len", "8", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "4 clips captioned" in flat(result.output) and "1 errors" in flat(result.output), read_manifest(out).column("caption_error").to_pylist()


def flat(text: str) -> str:
    """CLI output with the console's line wrapping undone."""
    return " ".join(text.split())
