"""CLIP stage with a tiny open_clip config (random weights): columns, embeddings side file, heads, errors."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from svdcli.cli.main import app  # noqa: E402
from svdcli.curate.scorers.aesthetic import aesthetic, laion_linear, laion_mlp, load_aesthetic  # noqa: E402
from svdcli.curate.frames import frame_times  # noqa: E402
from svdcli.curate.scorers.open_clip_models import clip_read_size  # noqa: E402
from svdcli.curate.stages.clip import embeddings_path, run_clip  # noqa: E402
from svdcli.demo.tiny_models import TINY_CLIP  # noqa: E402  (the demo's stand-in, same config)
from svdcli.errors import MissingWeightsError, SvdError  # noqa: E402
from svdcli.manifest.io import read_manifest, table_from_rows, write_manifest  # noqa: E402
from svdcli.video.probe import video_id  # noqa: E402
from svdcli.video.seek import read_frames_at  # noqa: E402
from svdcli.video.synth import Shot, write_video  # noqa: E402

FPS = 12.0
CAPTIONS = ["a red car on a road", "two dogs playing on a beach"]  # one per video, on its first clip
COLUMNS = ["clip_id", "video_id", "video_path", "start_time", "end_time", "start_frame", "end_frame",
           "num_frames", "fps", "width", "height", "status", "caption"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny open_clip model config, its random weights and a random LAION MLP head, as files."""
    d = tmp_path_factory.mktemp("tiny_clip")
    config = d / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    torch.save(open_clip.create_model("tiny-clip").state_dict(), d / "tiny-clip.pt")
    torch.save(laion_mlp(768).state_dict(), d / "aesthetic.pth")
    return {"model": str(config), "pretrained": str(d / "tiny-clip.pt"), "aesthetic": str(d / "aesthetic.pth")}


def rows_for(path, bounds, captions):
    vid = video_id(path)
    return [dict(clip_id=f"{vid}_{a}_{b}", video_id=vid, video_path=str(path), start_time=a / FPS,
                 end_time=b / FPS, start_frame=a, end_frame=b, num_frames=b - a, fps=FPS, width=96, height=64,
                 status="ok", caption=c) for (a, b), c in zip(bounds, captions)]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip_videos")
    rows = []
    for k in range(2):
        video = d / f"v{k}.mp4"
        # both shots move, so a clip's first, middle and last frames differ
        write_video(video, [Shot(12, seed=k, speed=(0.0, 1.5)), Shot(12, seed=k + 5, speed=(1.0, 0.0))],
                    size=(96, 64), fps=FPS)
        rows += rows_for(video, [(0, 12), (12, 24)], [CAPTIONS[k], None])
    return write_manifest(table_from_rows(rows, COLUMNS), d / "clips.parquet")


def test_laion_heads_load_from_their_file_layout(tmp_path):
    mlp = laion_mlp(768)
    assert [k for k in mlp.state_dict() if k.endswith("weight")] == [
        "layers.0.weight", "layers.2.weight", "layers.4.weight", "layers.6.weight", "layers.7.weight"]
    torch.save(mlp.state_dict(), tmp_path / "mlp.pth")
    torch.save(laion_linear(512).state_dict(), tmp_path / "linear.pth")
    e = torch.randn(5, 768)
    loaded = load_aesthetic(tmp_path / "mlp.pth")
    expect = mlp_head_formula(tmp_path / "mlp.pth", e.numpy())  # on normalised embeddings
    assert np.allclose(aesthetic(e, loaded).numpy(), expect, atol=1e-5)
    assert np.allclose(aesthetic(3 * e, loaded).numpy(), expect, atol=1e-5)
    state = torch.load(tmp_path / "linear.pth", weights_only=True)
    e = torch.randn(2, 512)
    unit = (e / e.norm(dim=1, keepdim=True)).numpy()
    linear = unit @ state["weight"].numpy()[0] + state["bias"].numpy()[0]  # w . e/|e| + b
    assert np.allclose(aesthetic(e, load_aesthetic(tmp_path / "linear.pth")).numpy(), linear, atol=1e-6)
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(SvdError, match="not a LAION aesthetic head"):
        load_aesthetic(tmp_path / "other.pth")


def direct_embeddings(tiny, row):
    """The tiny model's own towers called directly on the clip's first, middle and last frame:
    (3, D) unit image embeddings, (2, D) unit embeddings of CAPTIONS, and the frame times."""
    net = open_clip.create_model("tiny-clip", pretrained=tiny["pretrained"]).eval()
    cfg = net.visual.preprocess_cfg
    side = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    times = frame_times(row, "fml")
    frames = read_frames_at(row["video_path"], times, size=clip_read_size(row["width"], row["height"], side))
    top, left = (frames.shape[1] - side) // 2, (frames.shape[2] - side) // 2  # centre crop, as open_clip's
    x = torch.from_numpy(frames[:, top:top + side, left:left + side].copy()).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        image = net.encode_image(x)
        text = net.encode_text(open_clip.get_tokenizer("tiny-clip")(CAPTIONS))
    unit = lambda v: (v / v.norm(dim=-1, keepdim=True)).numpy()  # noqa: E731
    return unit(image), unit(text), times


def mlp_head_formula(head_file, e):
    """The LAION MLP by hand: five affine maps (dropout is off at inference), on unit embeddings."""
    state = torch.load(head_file, weights_only=True)
    h = e / np.linalg.norm(e, axis=-1, keepdims=True)
    for k in (0, 2, 4, 6, 7):
        h = h @ state[f"layers.{k}.weight"].numpy().T + state[f"layers.{k}.bias"].numpy()
    return h[..., 0]


def test_stage_writes_scores_and_one_embedding_per_clip_frame(tiny, manifest, tmp_path):
    result, out = run_clip(manifest, tmp_path / "out.parquet", **tiny)
    table = read_manifest(out).to_pylist()
    assert result.errors == 0 and all(r["clip_model"] == "tiny-clip:tiny-clip.pt" for r in table)
    assert [r["clip_score"] is not None for r in table] == [True, False, True, False]  # only captioned clips
    side = pq.read_table(embeddings_path(out))
    assert embeddings_path(out).name == "out.clip_embeddings.parquet"
    assert side.num_rows == 3 * len(table)
    assert not (tmp_path / "out.parquet.parts").exists()
    stored = {}
    for r in side.to_pylist():
        stored.setdefault(r["clip_id"], []).append((r["frame"], r["time"], np.asarray(r["embedding"])))
    for row in table:
        image, text, times = direct_embeddings(tiny, row)
        frames = stored[row["clip_id"]]
        assert [(f, t) for f, t, _ in frames] == list(zip(["first", "middle", "last"], times))
        assert np.allclose(np.stack([e for _, _, e in frames]), image, atol=1e-5)
        # aesthetic: the head's formula on each frame's embedding, mean over the three frames
        assert row["aesthetic_score"] == pytest.approx(mlp_head_formula(tiny["aesthetic"], image).mean(), abs=1e-5)
        if row["caption"] is not None:
            # clip_score: mean over frames of the cosine with the clip's own caption, not another's
            own = image @ text[CAPTIONS.index(row["caption"])]
            other = image @ text[1 - CAPTIONS.index(row["caption"])]
            assert row["clip_score"] == pytest.approx(own.mean(), abs=1e-5)
            assert abs(own.mean() - other.mean()) > 10 * 1e-5  # the tolerance tells the captions apart
            assert np.ptp(own) > 10 * 1e-5  # and the frames: a mean over the wrong frames would fail


def test_scores_do_not_depend_on_batch_size_and_repeat_exactly(tiny, manifest, tmp_path):
    _, a = run_clip(manifest, tmp_path / "a.parquet", batch_size=1, **tiny)
    _, b = run_clip(manifest, tmp_path / "b.parquet", batch_size=16, **tiny)
    _, c = run_clip(manifest, tmp_path / "c.parquet", batch_size=16, **tiny)
    sa, sb, sc = (read_manifest(p).column("aesthetic_score").to_pylist() for p in (a, b, c))
    assert sa == pytest.approx(sb, abs=1e-4)
    assert sb == sc
    assert len(set(np.round(sb, 6))) > 1  # different clips, different scores


def test_sharded_and_resumed_runs_keep_each_embedding_once(tiny, manifest, tmp_path):
    out = tmp_path / "out.parquet"
    first, written = run_clip(manifest, out, rank=0, world_size=2, **tiny)
    assert written is None and first.tasks_done == 1
    again, _ = run_clip(manifest, out, rank=0, world_size=2, **tiny)  # resumed: nothing to do
    assert again.rows == 0
    _, written = run_clip(manifest, out, rank=1, world_size=2, **tiny)
    side = pq.read_table(embeddings_path(written))
    keys = list(zip(side.column("clip_id").to_pylist(), side.column("frame").to_pylist()))
    assert len(keys) == len(set(keys)) == 3 * read_manifest(written).num_rows


def test_missing_weights_say_what_to_fetch(tiny, manifest, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(MissingWeightsError, match="timm/vit_large_patch14_clip_224.openai.*--pretrained"):
        run_clip(manifest, tmp_path / "o.parquet", aesthetic="none")
    monkeypatch.setenv("SVD_WEIGHTS_DIR", str(tmp_path / "heads"))
    with pytest.raises(MissingWeightsError, match=r"sac\+logos\+ava1-l14-linearMSE.pth.*github"):
        run_clip(manifest, tmp_path / "o.parquet", model=tiny["model"],
                 pretrained=tiny["pretrained"])
    result = CliRunner().invoke(app, ["curate", "clip", "-m", str(manifest), "-o", str(tmp_path / "o.parquet")])
    assert result.exit_code == 2 and "huggingface-cli download" in flat(result.output)
    assert "Traceback" not in result.output


def test_head_of_the_wrong_width_is_refused(tiny, manifest, tmp_path):
    torch.save(laion_linear(512).state_dict(), tmp_path / "b32.pth")
    with pytest.raises(SvdError, match="expects 512-d embeddings but tiny-clip.* gives 768-d"):
        run_clip(manifest, tmp_path / "o.parquet", **{**tiny, "aesthetic": str(tmp_path / "b32.pth")})
    assert not (tmp_path / "o.parquet.parts").exists()  # refused before any work


def test_cli_runs_with_local_files(tiny, manifest, tmp_path):
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(app, ["curate", "clip", "-m", str(manifest), "-o", str(out), "--model",
                                      tiny["model"], "--pretrained", tiny["pretrained"], "--aesthetic",
                                      tiny["aesthetic"], "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "clip_score for 2 captioned clips" in flat(result.output)
    assert embeddings_path(out).exists()


def flat(text: str) -> str:
    """CLI output with the console's line wrapping undone."""
    return " ".join(text.split())


def test_the_side_file_is_the_same_whatever_order_the_tasks_finished_in(tmp_path):
    """Per-task files merge into rows by clip and time (workers finish in any order); a clip a
    regrouped rerun embedded twice keeps its newest rows."""
    import os

    import pyarrow.parquet as pq

    from svdcli.curate.stages.clip import embeddings_table, merge_embeddings

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3, 3, 4)).astype(np.float32)
    times = [[0.0, 1.0, 2.0]] * 3
    parts = {"b": embeddings_table(["v2_0_9", "v1_5_9"], times[:2], emb[:2]),
             "a": embeddings_table(["v1_0_5"], times[:1], emb[2:])}
    merged = []
    for order in (["a", "b"], ["b", "a"]):
        folder = tmp_path / "-".join(order) / "parts"
        folder.mkdir(parents=True)
        for k, name in enumerate(order):
            pq.write_table(parts[name], folder / f"{name}.parquet")
            os.utime(folder / f"{name}.parquet", (1_000 + k, 1_000 + k))  # finished in this order
        merged.append(pq.read_table(merge_embeddings(folder, tmp_path / f"{'-'.join(order)}.parquet", "toy")))
    assert merged[0].equals(merged[1])
    assert merged[0].column("clip_id").to_pylist() == ["v1_0_5"] * 3 + ["v1_5_9"] * 3 + ["v2_0_9"] * 3
    assert merged[0].column("time").to_pylist() == [0.0, 1.0, 2.0] * 3
