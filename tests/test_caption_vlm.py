"""The paper's three captions: a video-language model over N frames, CoCa, an LLM summary of both.

Tiny random models built here from configs (a Qwen2.5-VL and a Qwen2 causal LM with a word-level
tokenizer trained in the test, svdcli/demo/tiny_models.py), loaded through the same
from_pretrained paths as real ones: their captions are random words, but which frames, prompts
and captions reach them, batching, columns and errors are what the tests check.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
open_clip = pytest.importorskip("open_clip")

from bad_inputs import assert_one_line_error  # noqa: E402
from clip_rows import clip_rows  # noqa: E402
from svdcli.cli.main import app  # noqa: E402
from svdcli.curate.frames import even_times  # noqa: E402
from svdcli.curate.scorers.captioning import vlm as vlm_module  # noqa: E402
from svdcli.curate.scorers.captioning import vllm_engine  # noqa: E402
from svdcli.curate.stages.caption import CaptionConfig, merge_labels, run_caption  # noqa: E402
from svdcli.demo.tiny_models import write_tiny_coca, write_tiny_llm, write_tiny_vlm  # noqa: E402
from svdcli.errors import MissingWeightsError, SvdError  # noqa: E402
from svdcli.manifest.io import read_manifest, table_from_rows, write_manifest  # noqa: E402
from svdcli.video.seek import analysis_size, read_frames_at  # noqa: E402
from svdcli.video.synth import Shot, write_video  # noqa: E402

FPS = 12.0
COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
           "num_frames", "fps", "width", "height", "status"]
FAST = {"frames": 4, "max_new_tokens": 6, "frame_size": 96}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_hf")
    coca = write_tiny_coca(d)
    return {"vlm": str(write_tiny_vlm(d / "vlm")), "llm": str(write_tiny_llm(d / "llm")),
            "coca": coca["model"], "coca_pretrained": coca["pretrained"]}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Four clips of distinct shots (different textures and colours) and one unreadable clip."""
    d = tmp_path_factory.mktemp("vlm_videos")
    video = d / "v.mp4"
    write_video(video, [Shot(12, seed=s, speed=(3.0, 2.0), brightness=0.4 + 0.2 * s) for s in range(4)],
                size=(96, 64), fps=FPS)
    rows = clip_rows(video, [(a, a + 12) for a in (0, 12, 24, 36)], FPS, (96, 64))
    rows.append({**rows[0], "clip_id": "broken", "video_path": str(d / "gone.mp4")})
    return write_manifest(table_from_rows(rows, COLUMNS), d / "clips.parquet")


def vlm(models, **extra) -> dict:
    return {"model": "vlm", "pretrained": models["vlm"], **FAST, **extra}


def rows_of(path) -> list[dict]:
    return read_manifest(path).to_pylist()


def test_even_times_are_slice_centres_inside_the_clip():
    clip = {"start_time": 2.0, "end_time": 4.0}
    assert even_times(clip, 1) == [3.0]  # the middle frame, as CoCa's
    assert even_times(clip, 4) == [2.25, 2.75, 3.25, 3.75]


def test_the_vlm_sees_the_clips_frames_at_even_timestamps(models, manifest, tmp_path, monkeypatch):
    seen = []
    original = vlm_module.VlmCaptioner.caption

    def spy(self, clips, seconds):
        seen.extend(zip(clips, seconds))
        return original(self, clips, seconds)

    monkeypatch.setattr(vlm_module.VlmCaptioner, "caption", spy)
    run_caption(manifest, tmp_path / "out.parquet", **vlm(models))
    clips = rows_of(manifest)[:4]
    assert len(seen) == 4
    for clip, (frames, seconds) in zip(clips, seen):
        expected = read_frames_at(clip["video_path"], even_times(clip, 4), size=analysis_size(96, 64, 96, upscale=False))
        assert frames.shape == (4, 64, 96, 3) and np.array_equal(frames, expected)  # the decoder's frames, copied
        assert seconds == pytest.approx(1.0)


def test_video_captions_differ_with_the_frames_and_repeat(models, manifest, tmp_path):
    _, a = run_caption(manifest, tmp_path / "a.parquet", **vlm(models))
    _, b = run_caption(manifest, tmp_path / "b.parquet", **vlm(models))
    first, second = rows_of(a), rows_of(b)
    captions = [r["caption_video"] for r in first[:4]]
    assert all(captions) and len(set(captions)) > 1  # different frames, different captions
    assert captions == [r["caption_video"] for r in second[:4]]  # fixed weights, greedy: the same again
    assert all(r["caption"] == r["caption_video"] and r["caption_source"] == "video" for r in first[:4])
    assert first[4]["caption"] is None and "not found" in first[4]["caption_error"]


def test_the_prompt_template_is_applied(models, manifest, tmp_path):
    from svdcli.curate.scorers.captioning.vlm import VlmCaptioner
    from svdcli.weights import hf_model

    captioner = VlmCaptioner(hf_model(models["vlm"], "--pretrained"), "a dog in {frames} frames over {seconds} s")
    text = captioner.render(4, 1.0)
    assert "a dog in 4 frames over 1.0 s" in text and "<|video_pad|>" in text and text.endswith("assistant\n")
    prompts = {}
    for name, prompt in {"dog": "the dog runs on the beach", "city": "a car drives through the city at night"}.items():
        path = tmp_path / f"{name}.txt"
        path.write_text(prompt)
        _, out = run_caption(manifest, tmp_path / f"{name}.parquet", **vlm(models, prompt_file=str(path)))
        prompts[name] = [r["caption_video"] for r in rows_of(out)[:4]]
        assert read_manifest(out).schema.metadata  # the prompt text is part of the recorded settings
    assert prompts["dog"] != prompts["city"]


def test_batching_gives_the_captions_of_one_by_one(models, manifest, tmp_path):
    settings = vlm(models, summarize=models["llm"], coca=models["coca"], coca_pretrained=models["coca_pretrained"],
                   generation="top_k", top_k=1, seq_len=8)
    _, one = run_caption(manifest, tmp_path / "one.parquet", batch_size=1, **settings)
    _, four = run_caption(manifest, tmp_path / "four.parquet", batch_size=4, **settings)
    columns = ["caption_coca", "caption_video", "caption_summary", "caption_tokens"]
    a, b = (read_manifest(p, columns=columns).to_pylist()[:4] for p in (one, four))
    assert a == b
    assert len({r["caption_summary"] for r in a}) > 1


def test_clips_whose_inputs_differ_in_length_caption_as_one_by_one(models):
    """Clips of other sizes and frame counts make inputs of other lengths; a padded batch would shift
    the padded rows' positions (transformers 4.55's Qwen2.5-VL), so they must not share a batch."""
    from svdcli.curate.scorers.captioning.vlm import VlmCaptioner
    from svdcli.weights import hf_model

    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8) for n, h, w in [(4, 64, 96), (2, 112, 112), (6, 56, 84)]]
    captioner = VlmCaptioner(hf_model(models["vlm"], "--pretrained"), "the {frames} frames", max_new_tokens=5,
                             batch_size=3)
    batched = captioner.caption(clips, [1.0, 0.5, 2.0])
    captioner.batch_size = 1
    assert batched == captioner.caption(clips, [1.0, 0.5, 2.0])
    lengths = {len(captioner.processor(text=[captioner.render(len(c), 1.0)], videos=[c])["input_ids"][0]) for c in clips}
    assert len(lengths) == 3  # the prompts really differ in length


def test_a_caption_ends_at_its_stop_token_which_is_not_counted(models):
    from svdcli.curate.scorers.captioning.summary import Summarizer
    from svdcli.weights import hf_model

    summarizer = Summarizer(hf_model(models["llm"], "--summarize"), "{coca} and {video}", max_new_tokens=4)
    pairs = [("a dog", "a cat"), ("the sea", "a boat")]
    free = summarizer.summarize(pairs)
    assert [g.tokens for g in free] == [4, 4] and all(len(g.text.split()) == 4 for g in free)
    first = summarizer.tokenizer(free[0].text.split()[0], add_special_tokens=False)["input_ids"]
    summarizer.net.generation_config.eos_token_id = first  # the first word it writes now ends the caption
    stopped = summarizer.summarize(pairs)
    assert stopped[0].text == "" and stopped[0].tokens == 0


def summary_input(tmp_path, manifest, coca: list[str], video: list[str]):
    import pyarrow as pa

    from svdcli.manifest.io import put_column

    table = read_manifest(manifest)
    table = put_column(table, "caption_coca", pa.array(coca + [None], pa.string()))
    table = put_column(table, "caption_video", pa.array(video + [None], pa.string()))
    return write_manifest(table, tmp_path / f"in-{len(list(tmp_path.iterdir()))}.parquet")


def test_the_summary_sees_both_captions(models, manifest, tmp_path):
    coca = ["a dog on the beach", "a man walks", "a boat on the sea", "a cat sits"]
    video = ["the camera pans over a dog", "a man walks in the city", "a boat moves slowly", "a red car"]
    settings = {"model": "none", "summarize": models["llm"], "max_new_tokens": 6}

    def summaries(coca, video):
        _, out = run_caption(summary_input(tmp_path, manifest, coca, video), tmp_path / "s.parquet", **settings)
        rows = rows_of(out)
        assert [r["caption_coca"] for r in rows[:4]] == coca  # the input's captions are kept as they were
        return [r["caption_summary"] for r in rows[:4]]

    base = summaries(coca, video)
    other_coca = summaries(["a dark forest at night"] + coca[1:], video)
    other_video = summaries(coca, video[:1] + ["the sky over the mountain"] + video[2:])
    assert other_coca[0] != base[0] and other_coca[1:] == base[1:]
    assert other_video[1] != base[1] and other_video[:1] + other_video[2:] == base[:1] + base[2:]


def test_columns_recipe_choice_and_a_second_run_keeping_the_first_runs_captions(models, manifest, tmp_path):
    settings = vlm(models, coca=models["coca"], coca_pretrained=models["coca_pretrained"], summarize=models["llm"],
                   generation="top_k", top_k=1, seq_len=8)
    _, out = run_caption(manifest, tmp_path / "all.parquet", **settings)
    rows = rows_of(out)[:4]
    for r in rows:
        assert r["caption_coca"] and r["caption_video"] and r["caption_summary"]
        assert r["caption"] == r["caption_summary"] and r["caption_source"] == "summary"  # auto: the summary
        assert r["caption_words"] == len(r["caption"].split()) and r["caption_tokens"] > 6  # three models wrote
        assert r["caption_model"] == (f"coca=tiny-coca:tiny-coca.pt; video=vlm (transformers); "
                                      f"summary=llm (transformers)")
    _, coca = run_caption(manifest, tmp_path / "coca.parquet", **settings, use="coca")
    assert [r["caption"] for r in rows_of(coca)[:4]] == [r["caption_coca"] for r in rows]
    # a second run makes only the video caption: the first run's CoCa caption and summary stay
    _, again = run_caption(out, tmp_path / "again.parquet", **vlm(models, prompt_file=""), use="video")
    second = rows_of(again)[:4]
    assert [r["caption_coca"] for r in second] == [r["caption_coca"] for r in rows]
    assert [r["caption_summary"] for r in second] == [r["caption_summary"] for r in rows]
    assert all(r["caption"] == r["caption_video"] and r["caption_source"] == "video" for r in second)
    assert second[0]["caption_model"] == rows[0]["caption_model"]  # the same models made what it holds


def test_a_cached_model_missing_a_weight_shard_is_not_taken_as_present(tmp_path):
    from svdcli.weights import _all_weights

    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"")
    assert not _all_weights(tmp_path)
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"")
    assert _all_weights(tmp_path)


def test_model_labels_merge_by_kind():
    assert merge_labels("coca_ViT-L-14:tag", {"video": "Q/VL (vllm)"}) == "coca=coca_ViT-L-14:tag; video=Q/VL (vllm)"
    assert merge_labels("coca=a:b; video=old (transformers)", {"video": "new (vllm)"}) == \
        "coca=a:b; video=new (vllm)"


def test_filter_and_pack_read_the_chosen_caption(models, manifest, tmp_path):
    from svdcli.curate.stages.filter import run_filter
    from svdcli.shards.micro_conditioning import MotionBuckets
    from svdcli.shards.pack_config import PackConfig
    from svdcli.shards.samples import build_sample

    _, out = run_caption(manifest, tmp_path / "v.parquet", **vlm(models))
    words = sorted(r["caption_words"] for r in rows_of(out)[:4])
    filtered, counts, _ = run_filter(out, [f"caption_words >= {words[-1]}"], tmp_path / "f.parquet")
    reasons = [r["drop_reason"] for r in rows_of(filtered)]
    assert reasons[4] == "caption_error" and counts["kept"] == sum(w >= words[-1] for w in words)
    assert all(r is None or r.startswith("caption_words <") or r == "caption_error" for r in reasons)
    clip = {**rows_of(out)[0], "caption_coca": "a dog", "rotation": 0}
    sample, _ = build_sample(clip, np.zeros((2, 8, 8, 3), np.uint8), [0.0, 0.1], 10.0,
                             PackConfig(size=(8, 8), format="npy"), MotionBuckets())
    meta = json.loads(sample["json"])
    assert sample["txt"].decode() == clip["caption_video"] == meta["caption"]
    assert meta["captions"] == {"source": "video", "coca": "a dog", "video": clip["caption_video"]}


def test_the_report_draws_caption_lengths_and_shows_captions(models, manifest, tmp_path):
    from svdcli.curate.report import write_report

    _, out = run_caption(manifest, tmp_path / "v.parquet", **vlm(models))
    page = write_report(out, tmp_path / "report")
    html = page.read_text()
    assert (tmp_path / "report" / "plots" / "caption_lengths.png").is_file()
    assert (tmp_path / "report" / "plots" / "caption_words.png").is_file()
    assert rows_of(out)[0]["caption"] in html


def test_output_tokens_are_metered_for_the_progress_bar_and_the_result(models, manifest, tmp_path):
    from svdcli.curate.stages.caption import throughput_line

    reports = []
    result, out = run_caption(manifest, tmp_path / "v.parquet", progress=reports.append, **vlm(models))
    tokens = sum(r["caption_tokens"] or 0 for r in rows_of(out))
    assert tokens > 0 and result.metered == tokens and result.rate > 0
    assert reports[-1].meter_unit == "tokens" and reports[-1].metered == tokens
    assert f"{tokens:,} output tokens" in throughput_line(result)


@pytest.mark.parametrize("settings,words", [
    ({"use": "best"}, ["--use must be one of auto, coca, video, summary, not 'best'"]),
    ({"engine": "tgi"}, ["--engine must be one of auto, transformers, vllm"]),
    ({"frames_as": "gif"}, ["--frames-as must be one of auto, video, images"]),
    ({"coca": "coca_ViT-L-14"}, ["--coca coca_ViT-L-14 is for a CoCa caption beside --model vlm"]),
    ({"model": "none"}, ["--model none makes no caption"]),
])
def test_bad_settings_are_one_clear_line(settings, words):
    with pytest.raises(SvdError) as info:
        CaptionConfig(**settings).check()
    for word in words:
        assert word in str(info.value)


def test_bad_inputs_and_missing_weights_are_one_line_on_the_cli(models, manifest, tmp_path, monkeypatch):
    def cli(*args):
        return CliRunner().invoke(app, ["curate", "caption", "-m", str(manifest), "-o", str(tmp_path / "o.parquet"),
                                        "--no-progress", *args])

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_one_line_error(cli("--model", "vlm", "--pretrained", "svdcli-test/no-such-vlm"),
                          "--pretrained svdcli-test/no-such-vlm", "huggingface-cli download svdcli-test/no-such-vlm")
    assert_one_line_error(cli("--model", "vlm", "--pretrained", str(tmp_path)), "has no config.json")
    assert_one_line_error(cli("--model", "vlm", "--pretrained", models["vlm"], "--summarize", models["llm"]),
                          "--summarize needs caption_coca", "--coca coca_ViT-L-14")
    assert_one_line_error(cli("--model", "vlm", "--pretrained", models["vlm"], "--prompt-file", "gone.txt"),
                          "--prompt-file gone.txt: no such file")
    bad = tmp_path / "bad.txt"
    bad.write_text("summarize {video} and {cocoa}")
    assert_one_line_error(cli("--model", "vlm", "--pretrained", models["vlm"], "--summarize", models["llm"],
                              "--coca", models["coca"], "--coca-pretrained", models["coca_pretrained"],
                              "--summary-prompt-file", str(bad)), "unknown field(s) {cocoa}")
    bad.write_text("summarize {video}")
    assert_one_line_error(cli("--model", "vlm", "--pretrained", models["vlm"], "--summarize", models["llm"],
                              "--coca", models["coca"], "--coca-pretrained", models["coca_pretrained"],
                              "--summary-prompt-file", str(bad)), "must contain {coca}")
    assert_one_line_error(cli("--model", "vlm", "--pretrained", models["llm"]), "cannot load llm",
                          "vision-language")
    with pytest.raises(MissingWeightsError, match="no-such-llm"):
        run_caption(manifest, tmp_path / "o.parquet", **vlm(models), summarize="svdcli-test/no-such-llm",
                    coca=models["coca"], coca_pretrained=models["coca_pretrained"])


def test_engine_choice_and_its_errors(monkeypatch):
    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: False)
    monkeypatch.setattr(vllm_engine, "cuda_visible", lambda: True)
    assert vllm_engine.resolve_engine("auto", "cuda") == "transformers"
    with pytest.raises(SvdError, match="needs the vllm package, which is not installed"):
        vllm_engine.resolve_engine("vllm", "cuda")
    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: True)
    assert vllm_engine.resolve_engine("auto", "cuda") == "vllm"
    assert vllm_engine.resolve_engine("auto", "cpu") == "transformers"
    assert vllm_engine.resolve_engine("transformers", "cuda") == "transformers"
    with pytest.raises(SvdError, match="needs a CUDA GPU and --device cpu was asked for"):
        vllm_engine.resolve_engine("vllm", "cpu")
    assert vllm_engine.resolve_engine("auto", "cuda:1") == "transformers"  # vLLM would take GPU 0
    with pytest.raises(SvdError, match="set CUDA_VISIBLE_DEVICES=1 and --device cuda"):
        vllm_engine.resolve_engine("vllm", "cuda:1")
    monkeypatch.setattr(vllm_engine, "cuda_visible", lambda: False)
    assert vllm_engine.resolve_engine("auto", "auto") == "transformers"
    with pytest.raises(SvdError, match="no CUDA GPU is visible"):
        vllm_engine.resolve_engine("vllm", "auto")


def test_engine_vllm_without_it_stops_the_cli_in_one_line(models, manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: False)
    result = CliRunner().invoke(app, ["curate", "caption", "-m", str(manifest), "-o", str(tmp_path / "o.parquet"),
                                      "--no-progress", "--model", "vlm", "--pretrained", models["vlm"],
                                      "--engine", "vllm"])
    assert_one_line_error(result, "--engine vllm needs the vllm package")
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.gpu
def test_vllm_and_transformers_caption_alike(models, manifest, tmp_path):
    if not (torch.cuda.is_available() and vllm_engine.vllm_installed()):
        pytest.skip("needs a CUDA GPU and the vllm package")
    settings = {**vlm(models), "summarize": models["llm"], "coca": models["coca"],
                "coca_pretrained": models["coca_pretrained"], "device": "cuda"}
    _, a = run_caption(manifest, tmp_path / "hf.parquet", engine="transformers", **settings)
    _, b = run_caption(manifest, tmp_path / "vllm.parquet", engine="vllm", **settings)
    columns = ["caption_video", "caption_summary"]
    assert read_manifest(a, columns=columns).to_pylist() == read_manifest(b, columns=columns).to_pylist()


def test_a_recipe_makes_the_three_captions_and_filters_on_the_chosen_one(models, manifest, tmp_path):
    import yaml

    recipe = tmp_path / "captions.yaml"
    recipe.write_text(yaml.safe_dump({"name": "captions", "report": False, "stages": {
        "caption": {**vlm(models), "coca": models["coca"], "coca_pretrained": models["coca_pretrained"],
                    "summarize": models["llm"], "use": "video", "generation": "top_k", "seq_len": 8},
        "filter": {"rules": ["caption_words >= 1"]}}}))
    result = CliRunner().invoke(app, ["curate", "run", str(recipe), "--manifest", str(manifest), "--workdir",
                                      str(tmp_path / "work"), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "work" / "manifests" / "filter.parquet")
    assert all(r["caption"] == r["caption_video"] and r["caption_coca"] and r["caption_summary"] for r in rows[:4])
    assert [r["keep"] for r in rows] == [True] * 4 + [False] and rows[4]["drop_reason"] == "caption_error"
    offline = CliRunner().invoke(app, ["curate", "run", str(recipe), "--manifest", str(manifest), "--workdir",
                                       str(tmp_path / "w2"), "--set", "caption.summarize=svdcli-test/none"],
                                 env={"HF_HUB_OFFLINE": "1"})
    assert_one_line_error(offline, "--summarize svdcli-test/none")  # before any stage ran
    assert not (tmp_path / "w2" / "manifests" / "caption.parquet").exists()
